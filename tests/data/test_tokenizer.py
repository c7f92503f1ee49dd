import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genforge.artifacts import read_manifest, write_manifest
from genforge.config import load_config
from genforge.data.config import TokenizerConfig
from genforge.data.tokenizer import MIN_VOCAB_SIZE, SPECIAL_TOKENS, build_bpe, train_tokenizer
from genforge.errors import ArtifactError, ConfigError, DataError

ROUND_TRIP = [
    "Hello, world!",
    "  two leading spaces and a trailing one ",
    "\tTabs\tand\nnew\nlines\r\nCRLF\n\n",
    "中文文本：您好，世界！退款将原路返回。",
    "家庭 👨‍👩‍👧‍👦 and flags 🇨🇳🇬🇧, skin tone 👍🏽",
    "שלום עולם — مرحبا بالعالم (RTL)",
    "e\u0301 (combining accent) vs \u00e9, NBSP\u00a0here, zero\u200bwidth",
    "literal <|eos|> and <|im_start|> in user text",
    "",
]

ENGLISH = [
    "Thank you for contacting customer support. Your order number is being checked now.",
    "Refunds are issued to the original payment method within five working days.",
    "Please reply with the tracking number so that we can trace the parcel with the carrier.",
    "Our opening hours are Monday to Friday, nine to five, except public holidays.",
]
CHINESE = [
    "感谢您联系客服，我们正在为您查询订单状态。",
    "退款将在五个工作日内原路返回到您的付款账户。",
    "请回复快递单号，我们会联系快递公司追踪包裹。",
    "我们的营业时间为周一至周五上午九点到下午五点，法定节假日除外。",
]


def make_prepared(folder: Path, train: list[str], val: list[str]) -> Path:
    """A prepared-data artifact as `data prepare` leaves it: JSONL splits + manifest written last."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, texts in (("train", train), ("val", val)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t, "source": "test"}, ensure_ascii=False) + "\n")
    write_manifest(folder, "data.prepare", None, metrics={"train_docs": len(train)})
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    docs = [f"{s} ({i})" for i in range(60) for s in ENGLISH + CHINESE]
    data = make_prepared(root / "data", docs, ENGLISH + CHINESE)
    return train_tokenizer(TokenizerConfig(data=data, out=root / "tok", vocab_size=600, min_frequency=2))


def test_reloads_with_autotokenizer_special_tokens_and_chat_template(trained):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained)
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4, 5]
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.mask_token) == tuple(SPECIAL_TOKENS[:4])
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 3)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids[0] == 4 and ids.count(5) == 2
    assert tok.model_max_length == 2048
    # no BOS/EOS added behind the caller's back: pack and later stages decide
    assert not {1, 2} & set(tok("Refunds are issued.")["input_ids"])


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_encode_is_exact(trained, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained)
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_manifest_and_metrics(trained):
    manifest = read_manifest(trained, stage="tokenizer")
    assert manifest["parent"]["stage"] == "data.prepare"
    m = manifest["metrics"]
    assert MIN_VOCAB_SIZE < m["vocab_size"] <= 600
    assert m["compression_measured_on"] == "val.jsonl"
    assert m["bytes_per_token"] > 1.5  # merges were learned: better than one byte per token
    assert m["train_docs"] == 480
    assert manifest["inputs"][0]["path"].endswith("train.jsonl")


def test_max_docs_limits_training_and_training_is_deterministic(tmp_path):
    data = make_prepared(tmp_path / "data", ENGLISH * 10 + CHINESE * 10, ENGLISH)
    out = train_tokenizer(TokenizerConfig(data=data, out=tmp_path / "tok", vocab_size=300, max_docs=3))
    assert read_manifest(out)["metrics"]["train_docs"] == 3
    a = train_tokenizer(TokenizerConfig(data=data, out=tmp_path / "a", vocab_size=350))
    b = train_tokenizer(TokenizerConfig(data=data, out=tmp_path / "b", vocab_size=350))
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "tokenizer.json").read_bytes() != (out / "tokenizer.json").read_bytes()


def test_out_must_not_be_the_data_folder(tmp_path):
    data = make_prepared(tmp_path / "data", ENGLISH, ENGLISH)
    with pytest.raises(ConfigError, match="is the data folder itself"):
        train_tokenizer(TokenizerConfig(data=data, out=data, vocab_size=300))
    assert read_manifest(data, stage="data.prepare")


def test_special_tokens_keep_their_ids_at_minimum_vocab():
    tok = build_bpe(iter(ENGLISH), MIN_VOCAB_SIZE, show_progress=False)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(6))
    assert tok.get_vocab_size() == MIN_VOCAB_SIZE


def test_vocab_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match=f"at least {MIN_VOCAB_SIZE}"):
        load_config(TokenizerConfig, overrides={"vocab_size": 100})


def test_refuses_folders_that_are_not_prepared_data(tmp_path, trained):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        train_tokenizer(TokenizerConfig(data=tmp_path, out=tmp_path / "tok"))
    with pytest.raises(ArtifactError, match="'tokenizer' artifact; expected data.prepare"):
        train_tokenizer(TokenizerConfig(data=trained, out=tmp_path / "tok"))


def test_malformed_line_names_file_and_line(tmp_path):
    data = make_prepared(tmp_path / "data", ENGLISH, ENGLISH)
    with open(data / "train.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"train.jsonl:5 is not a JSON object"):
        train_tokenizer(TokenizerConfig(data=data, out=tmp_path / "tok", vocab_size=300))


def test_cli_trains_and_reports_bad_input_in_one_line(tmp_path):
    from genforge.cli import app

    data = make_prepared(tmp_path / "data", ENGLISH + CHINESE, CHINESE)
    ok = CliRunner().invoke(app, ["tokenizer", "train", "--data", str(data), "--vocab-size", "300",
                                  "--out", str(tmp_path / "tok")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    bad = CliRunner().invoke(app, ["tokenizer", "train", "--data", str(data), "--vocab-size", "10",
                                   "--out", str(tmp_path / "tok2")])
    assert bad.exit_code == 2
    assert bad.output.strip() == f"error: vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte symbols + " \
                                 "special tokens); got 10"


def test_text_that_is_not_utf8_names_file_and_line(tmp_path):
    data = make_prepared(tmp_path / "data", ENGLISH, ENGLISH)
    with open(data / "train.jsonl", "ab") as f:
        f.write('{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"train.jsonl:5 is not UTF-8 text .*save it as UTF-8"):
        train_tokenizer(TokenizerConfig(data=data, out=tmp_path / "tok", vocab_size=300))


def test_a_rerun_that_fails_on_bad_data_keeps_the_earlier_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    good = train_tokenizer(TokenizerConfig(data=make_prepared(tmp_path / "good", ENGLISH, ENGLISH),
                                           out=tmp_path / "tok", vocab_size=300))
    bad = make_prepared(tmp_path / "bad", ENGLISH, ENGLISH)
    (bad / "train.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="train.jsonl:1 is not a JSON object"):
        train_tokenizer(TokenizerConfig(data=bad, out=good, vocab_size=300))
    assert read_manifest(good, "tokenizer")["metrics"]["train_docs"] == len(ENGLISH)
    tok = AutoTokenizer.from_pretrained(good)
    assert tok.decode(tok("refunds")["input_ids"]) == "refunds"
