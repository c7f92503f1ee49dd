import copy
import json
import shutil

import pytest
import torch

from genforge.artifacts import read_manifest
from genforge.errors import ArtifactError, ConfigError, DataError
from genforge.finetune.chat import chat_loop, load_chat_decoder
from genforge.finetune.config import ChatConfig, SftConfig
from genforge.finetune.sft import (
    encode_dialogue,
    make_collate,
    pack_examples,
    parse_dialogue,
    read_dialogues,
    segments,
    sft,
)
from genforge.train.objectives import IGNORE

DIALOGUE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Where is my card?"},
            {"role": "assistant", "content": "It ships tomorrow."}]


def learned_text(tokenizer, ids, labels):
    return tokenizer.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def test_only_assistant_tokens_are_learned(tokenizer):
    ids, labels = encode_dialogue(tokenizer, DIALOGUE, max_tokens=1000)
    full = tokenizer.apply_chat_template(DIALOGUE, tokenize=False)
    assert tokenizer.decode(ids) == full  # segment-wise tokenisation renders the same dialogue
    assert learned_text(tokenizer, ids, labels) == "Hello!<|im_end|>\nIt ships tomorrow.<|im_end|>\n"
    assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels, strict=True))
    ids2, labels2 = encode_dialogue(tokenizer, DIALOGUE, max_tokens=1000, train_on_prompt=True)
    assert ids2 == ids and labels2 == ids


def test_segments_split_the_assistant_header_from_its_content(tokenizer):
    parts = segments(tokenizer, DIALOGUE[1:3])
    assert parts == [("<|im_start|>user\nHi there<|im_end|>\n", False), ("<|im_start|>assistant\n", False),
                     ("Hello!<|im_end|>\n", True)]


def test_truncation_keeps_the_latest_turns(tokenizer):
    long = [DIALOGUE[0]] + [{"role": r, "content": f"turn {i} " + "words " * 20}
                            for i in range(6) for r in ("user", "assistant")]
    full_ids, _ = encode_dialogue(tokenizer, long, max_tokens=10_000)
    ids, labels = encode_dialogue(tokenizer, long, max_tokens=len(full_ids) // 2)
    text = tokenizer.decode(ids)
    assert len(ids) <= len(full_ids) // 2
    assert text.startswith("<|im_start|>system\nBe brief.")  # the system message stays
    assert "turn 5" in text and "turn 0" not in text  # the oldest turns went first
    assert text.split("<|im_end|>\n")[1].startswith("<|im_start|>user")  # cut at a user turn
    assert encode_dialogue(tokenizer, DIALOGUE, max_tokens=3) is None  # nothing learnable fits


def test_long_dialogues_raise_no_indexing_warning(tokenizer):
    """Every SFT run whose dialogues exceeded the model's positions printed transformers' "Running this
    sequence through the model will result in indexing errors", though each is cut to --seq-len."""
    tok = copy.deepcopy(tokenizer)
    tok.model_max_length, tok.deprecation_warnings = 8, {}
    ids, _ = encode_dialogue(tok, DIALOGUE, max_tokens=1000)
    assert len(ids) > 8
    assert "sequence-length-is-longer-than-the-specified-maximum" not in tok.deprecation_warnings


def test_sharegpt_and_errors_name_the_line(jsonl):
    share = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert parse_dialogue(share, "x") == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    path = jsonl("d.jsonl", [{"messages": DIALOGUE}, share])
    assert len(read_dialogues(path, system="sys")) == 2
    assert read_dialogues(path, system="sys")[1][0] == {"role": "system", "content": "sys"}
    bad = [({"messages": [{"role": "user", "content": "only a question"}]}, "the dialogue has no assistant turn"),
           ({"messages": [{"role": "robot", "content": "x"}]}, "turn 0 has unknown role 'robot'"),
           ({"messages": [{"role": "user"}]}, 'turn 0 must be an object with "role" and "content"'),
           ({"text": "hello"}, 'expected a "messages"')]
    for record, message in bad:
        path = jsonl("bad.jsonl", [{"messages": DIALOGUE}, record])
        with pytest.raises(DataError, match=r"bad\.jsonl:2: " + message.replace("(", r"\(")):
            read_dialogues(path)


@pytest.mark.parametrize("name", ["d.txt", "d.csv", "d.tsv"])
def test_dialogues_are_read_from_json_files_only(tmp_path, name):
    path = tmp_path / name
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}]"\n', encoding="utf-8")
    suffix = path.suffix.replace(".", r"\.")
    with pytest.raises(DataError, match=rf"unsupported format '{suffix}'; use \.jsonl or \.json$"):
        read_dialogues(path)
    json_file = tmp_path / "d.json"  # an array of dialogues reads like JSONL
    json_file.write_text(json.dumps([{"messages": DIALOGUE}]), encoding="utf-8")
    assert read_dialogues(json_file) == [DIALOGUE]


def test_packing_and_collate_shift(tokenizer):
    a = encode_dialogue(tokenizer, DIALOGUE[1:3], max_tokens=100)
    packed = pack_examples([a, a, a], max_tokens=2 * len(a[0]))
    assert [len(p[0]) for p in packed] == [2 * len(a[0]), len(a[0])]
    batch = make_collate(packed, tokenizer.pad_token_id)([0, 1])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    ids, labels, positions = packed[0]
    assert batch["input_ids"][0].tolist() == ids[:-1] and batch["labels"][0].tolist() == labels[1:]
    assert positions == [*range(len(a[0])), *range(len(a[0]))]  # they restart with each packed dialogue
    assert batch["position_ids"][0].tolist() == positions[:-1]
    assert (batch["labels"][1, len(a[0]) - 1:] == IGNORE).all()  # padding is never learned
    assert batch["attention_mask"][1].sum() == len(a[0])  # its real tokens, as inputs


def test_a_packed_dialogue_reads_only_itself(tokenizer, llama_dir):
    """Packed dialogues attended to the ones before them and their positions ran on, so a dialogue's loss
    packed (6.337) was not its loss alone (6.386). Now the two are equal: each reads only itself."""
    from genforge.finetune.sft import load_causal_lm
    from genforge.train.objectives import ClmObjective

    a = encode_dialogue(tokenizer, DIALOGUE[1:3], max_tokens=100)
    b = encode_dialogue(tokenizer, DIALOGUE[3:], max_tokens=100)
    model = load_causal_lm(llama_dir).eval()
    packed = pack_examples([a, b], max_tokens=200)
    alone = [(ids, labels, list(range(len(ids)))) for ids, labels in (a, b)]
    with torch.no_grad():
        loss_packed, _ = ClmObjective().loss(model, make_collate(packed, tokenizer.pad_token_id)([0]))
        loss_alone, _ = ClmObjective().loss(model, make_collate(alone, tokenizer.pad_token_id)([0, 1]))
    assert len(packed) == 1 and loss_packed.item() == pytest.approx(loss_alone.item(), abs=1e-5)
    assert loss_packed.item() != pytest.approx(  # the check can tell: without isolation the losses differ
        ClmObjective().loss(model, make_collate(packed, tokenizer.pad_token_id, positions=False)([0]))[0].item(),
        abs=1e-3)


@pytest.fixture
def dialogues(jsonl):
    records = [{"messages": [{"role": "user", "content": f"question {i}?"},
                             {"role": "assistant", "content": f"answer {i}."}]} for i in range(40)]
    return jsonl("dialogues.jsonl", records)


def test_sft_full_and_lora_adapter(tmp_path, llama_dir, dialogues, tokenizer):
    common = dict(model=llama_dir, data=dialogues, max_steps=6, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=1,
                  eval_every=3, log_every=1, bf16=False)
    full = sft(SftConfig(out=tmp_path / "full", pack=True, **common))
    metrics = read_manifest(full, "finetune")["metrics"]
    assert metrics["val_loss"] < metrics["val_loss_before"]
    config = json.loads((full / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in config["eos_token_id"]

    lora = sft(SftConfig(out=tmp_path / "lora", lora_r=4, lora_alpha=8, **common))
    assert (lora / "adapter_model.safetensors").is_file() and not (lora / "model.safetensors").exists()
    decoder = load_chat_decoder(lora)
    cfg = ChatConfig(model=lora, system="Be brief.", max_new_tokens=5, temperature=0, seed=0)
    shown = []
    transcript = chat_loop(decoder, cfg, ["hello", "/reset", "question 1?", "/exit", "never read"], shown.append)
    assert [m["role"] for m in transcript] == ["system", "user", "assistant"]
    assert "".join(shown).endswith("assistant> " + transcript[2]["content"] + "\n")  # the reply was streamed
    assert "(conversation reset)\n" in shown
    # The adapter folder stands for base + adapter wherever a model folder is taken.
    from genforge.generate import generate

    assert generate(lora, "hello", max_new_tokens=4, temperature=0)[0] == generate(
        decoder, "hello", max_new_tokens=4, temperature=0)[0]
    # ... but not as a base to fine-tune (a run from its merge would record the adapter's base as its own);
    # the refusal comes before --out is touched, so the finished run there stays whole.
    with pytest.raises(ArtifactError, match="is a LoRA adapter, not a full model: fine-tune from its base"):
        sft(SftConfig(out=full, **(common | {"model": lora})))
    assert read_manifest(full, "finetune")["metrics"] == metrics


def test_sft_refuses_an_encoder(tmp_path, bert_dir, dialogues):
    with pytest.raises(ConfigError, match="encoder; SFT needs a causal LM"):
        sft(SftConfig(model=bert_dir, data=dialogues, out=tmp_path / "x", seq_len=64))
    assert not (tmp_path / "x").exists()


def test_a_system_message_that_is_not_utf8_is_refused(tmp_path, llama_dir, dialogues):
    with pytest.raises(ConfigError, match=r"--system is not UTF-8 text \(byte 0xe9\)"):
        SftConfig(model=llama_dir, data=dialogues, out=tmp_path / "x", system="caf\udce9").check()


def test_lora_resume_continues_exactly(tmp_path, llama_dir, dialogues):
    common = dict(model=llama_dir, data=dialogues, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=1, eval_every=0,
                  log_every=1, bf16=False, lora_r=4, save_every=2)
    straight = sft(SftConfig(out=tmp_path / "a", max_steps=4, **common))
    sft(SftConfig(out=tmp_path / "b", max_steps=2, **common))
    (tmp_path / "b" / "manifest.json").unlink()  # as if the first run had been killed after its checkpoint
    resumed = sft(SftConfig(out=tmp_path / "b", max_steps=4, resume=True, **common))
    from safetensors.torch import load_file

    a, b = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_resume_on_other_inputs_is_refused(tmp_path, llama_dir, dialogues, jsonl):
    """A --resume with another --data, --model or LoRA alpha continued the checkpoint silently (only a
    `resume` record in metrics.jsonl said so), and the manifest named the new inputs alone."""
    common = dict(model=llama_dir, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=1, eval_every=0, bf16=False,
                  lora_r=4, out=tmp_path / "run")
    sft(SftConfig(data=dialogues, max_steps=2, **common))
    (tmp_path / "run" / "manifest.json").unlink()  # as if killed after its checkpoint
    other = jsonl("other.jsonl", [{"messages": [{"role": "user", "content": f"q {i}"},
                                                {"role": "assistant", "content": f"a {i}"}]} for i in range(40)])
    with pytest.raises(ConfigError, match=r"^--resume: --data .*other\.jsonl is not the interrupted run's \(its "
                                          r"sha256 differs\); resume with the same settings or choose another --out$"):
        sft(SftConfig(data=other, max_steps=4, resume=True, **common))
    with pytest.raises(ConfigError, match=r"^--resume: lora_alpha 8\.0 differs from the interrupted run's 16\.0"):
        sft(SftConfig(data=dialogues, max_steps=4, resume=True, **(common | {"lora_alpha": 8.0})))
    with pytest.raises(ConfigError, match=r"^--resume: model .*elsewhere differs from the interrupted run's"):
        sft(SftConfig(data=dialogues, max_steps=4, resume=True,
                      **(common | {"model": shutil.copytree(llama_dir, tmp_path / "elsewhere")})))
    resumed = sft(SftConfig(data=dialogues, max_steps=4, resume=True, **common))
    assert read_manifest(resumed, "finetune")["metrics"]["steps"] == 4


def test_a_dialogue_that_opens_with_an_answer_or_holds_a_lone_surrogate_is_named(tmp_path, jsonl):
    """Both used to fail far away: the chat template's "empty conversation", the hash split's UnicodeEncodeError."""
    path = jsonl("d.jsonl", [{"messages": DIALOGUE}, {"messages": [{"role": "assistant", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: turn 0 is an assistant turn; a dialogue opens with a user"):
        read_dialogues(path)
    path = tmp_path / "s.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "q\\ud800"}, {"role": "assistant", "content": "a"}]}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"s\.jsonl:1: field 'messages' is not UTF-8 text \(lone surrogate \\ud800\)"):
        read_dialogues(path)


def test_a_lora_adapter_stops_at_im_end_under_plain_peft(tmp_path, llama_dir, dialogues, tokenizer):
    """peft takes the base's generation config (eos only): the adapter folder carries the chat one, and its
    card's usage passes it, so plain peft + generate ends a reply at <|im_end|> as full SFT folders do."""
    from peft import AutoPeftModelForCausalLM
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    run = sft(SftConfig(model=llama_dir, data=dialogues, out=tmp_path / "lora", lora_r=4, max_steps=2, batch_size=4,
                        seq_len=64, warmup_steps=1, eval_every=0, log_every=1, bf16=False))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    saved = GenerationConfig.from_pretrained(run)
    assert saved.eos_token_id == [tokenizer.eos_token_id, end]
    assert f'GenerationConfig.from_pretrained("{run}")' in (run / "README.md").read_text()

    class EndAtThird(LogitsProcessor):  # the random model would never choose <|im_end|> by itself
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == prompt.shape[1] + 2:
                scores[:, end] = scores.max() + 100
            return scores

    model = AutoPeftModelForCausalLM.from_pretrained(run)
    model.generation_config = saved
    prompt = torch.tensor([tokenizer("question 1?")["input_ids"]])
    out = model.generate(input_ids=prompt, max_new_tokens=8, do_sample=False, min_new_tokens=0,
                         logits_processor=LogitsProcessorList([EndAtThird()]))
    assert out.shape[1] == prompt.shape[1] + 3 and out[0, -1] == end
    from genforge.models.load import load_model

    assert load_model(run)[0].generation_config.eos_token_id == saved.eos_token_id  # genforge's merge keeps it


def test_model_folders_tell_the_tokenizer_their_length_and_cards_hash_the_data(tmp_path, llama_dir, dialogues):
    """HF pipelines truncate at the tokenizer's model_max_length: it must be the model's positions, not the
    tokenizer's default 2048. The card's Lineage lists the data files with their hashes, as pretrain's does."""
    from transformers import AutoTokenizer

    from genforge.artifacts import sha256_file

    run = sft(SftConfig(model=llama_dir, data=dialogues, out=tmp_path / "full", max_steps=1, batch_size=4, seq_len=64,
                        warmup_steps=1, eval_every=0, log_every=1, bf16=False))
    assert AutoTokenizer.from_pretrained(run).model_max_length == 32768  # llama_dir's max_position_embeddings
    card = (run / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| 0 | finetune |"))
    assert f"`dialogues.jsonl` {sha256_file(dialogues)[:12]}" in row
    assert "a model from outside genforge" in card
