"""`app support build` reads its inputs before it touches --out: a rebuild on bad input keeps the earlier
assistant (its manifest is written by hand here: a real build takes longer than a test should)."""

import pytest

from genforge.apps.support.build import VAL_BUCKET, build, split_calibration
from genforge.apps.support.config import BuildConfig
from genforge.apps.support.ingest import Passage
from genforge.artifacts import read_manifest, write_manifest
from genforge.errors import DataError
from genforge.finetune.data import hash_bucket


@pytest.mark.parametrize("bad", ["missing val", "empty history"])
def test_a_rebuild_on_bad_input_keeps_the_earlier_assistant(company, tmp_path, bad):
    out = tmp_path / "support"
    out.mkdir()
    finished = write_manifest(out, "app.support.build", None, metrics={"passages": 12})
    empty_history = tmp_path / "history.jsonl"
    empty_history.write_text("", encoding="utf-8")
    change, message = {"missing val": ({"val": tmp_path / "gone.csv"}, "data file .*gone.csv does not exist"),
                       "empty history": ({"history": empty_history}, "history.jsonl holds no dialogues")}[bad]
    inputs = {"kb": [company / "faq.csv"], "val": company / "val.csv", "history": company / "history.jsonl"}
    with pytest.raises(DataError, match=message):
        build(BuildConfig(**{**inputs, **change}, out=out))
    assert read_manifest(out, "app.support.build") == finished


def test_holding_out_calibration_questions_keeps_every_entry_in_the_index():
    questions = [f"how do I change my delivery address {n}" for n in range(400)]
    held = [q for q in questions if hash_bucket(q) == VAL_BUCKET]
    other = [q for q in questions if hash_bucket(q) != VAL_BUCKET]
    passages = [Passage(0, "faq", "address", held[0], "A", "f:1"), Passage(1, "faq", "address", held[1], "A", "f:2"),
                Passage(2, "faq", "refund", other[0], "B", "f:3"), Passage(3, "faq", "refund", held[2], "B", "f:4"),
                Passage(4, "faq", "hours", held[3], "C", "f:5")]
    kept, val, _ = split_calibration(passages, [])
    assert [p.id for p in kept] == [0, 2, 4]  # 'address' had every variant in the bucket: its first stays
    assert val == [(held[1], "address"), (held[2], "refund")]


def test_a_build_without_val_trains_the_classifier_on_what_calibration_leaves(company, bert_dir, tmp_path):
    """Without --val the calibration questions are hash bucket 8, the bucket `finetune classify` validates on:
    the classifier used to find no validation questions and the build died ("give --val-data")."""
    import json

    out = build(BuildConfig(kb=[company / "faq.csv"], oos=company / "oos.txt", out=tmp_path / "support",
                            intent_base=bert_dir, classify_steps=2, classify_batch=8))
    meta = json.loads((out / "support.json").read_text(encoding="utf-8"))
    assert meta["intent"] is True and meta["thresholds"]
    assert (out / "work" / "intents_val.csv").read_text(encoding="utf-8").count("\n") == 1 + 3  # the bucket-8 variants


@pytest.mark.parametrize("given", ["val of off-topic questions only", "no val, no FAQ variant in bucket 8"])
def test_calibration_without_in_scope_questions_is_refused(tmp_path, given):
    """Thresholds chosen on off-topic questions alone were nonsense (the FAQ answer never used, a target in-scope
    accuracy of -0.01), built without a word: a FAQ made by `from-bitext` has no bucket-8 variant."""
    import csv

    faq = tmp_path / "faq.csv"
    with open(faq, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("id", "question", "answer"), *[(f"e{n % 2}", q, f"answer {n % 2}") for n, q in
                                  enumerate(q for q in (f"question {n}" for n in range(40)) if hash_bucket(q) != 8)]])
    oos_only = tmp_path / "val.csv"
    oos_only.write_text("text,label\nwhat is the weather,oos\n", encoding="utf-8")
    off_topic = tmp_path / "oos.txt"  # some in bucket 8: calibration questions without --val
    off_topic.write_text("".join(f"off-topic question {n}\n" for n in range(40)), encoding="utf-8")
    val = {"val of off-topic questions only": oos_only, "no val, no FAQ variant in bucket 8": None}[given]
    with pytest.raises(DataError, match="no in-scope calibration questions"):
        build(BuildConfig(kb=[faq], val=val, oos=off_topic, out=tmp_path / "support"))
    assert not (tmp_path / "support").exists()


def test_recalibrating_on_off_topic_questions_alone_is_refused(tmp_path):
    from genforge.apps.support.build import recalibrate
    from genforge.apps.support.config import CalibrateConfig

    oos_only = tmp_path / "val.csv"
    oos_only.write_text("text,label\nwhat is the weather,oos\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no in-scope question"):
        recalibrate(CalibrateConfig(assistant=tmp_path / "support", val=oos_only))


def test_a_rebuild_into_the_same_folder_drops_what_it_no_longer_makes(assistant_dir, company, tmp_path):
    """The earlier build's classifier and chat model used to stay and be loaded with the new index."""
    import shutil

    from genforge.apps.support.assistant import load_assistant

    out = tmp_path / "support"
    shutil.copytree(assistant_dir, out)
    build(BuildConfig(kb=[company / "faq.csv"], val=company / "val.csv", out=out, classify=False))
    assert not (out / "chat").exists() and not (out / "intent").exists() and not (out / "intent_ood.npz").exists()
    assistant = load_assistant(out)
    assert assistant.classifier is None and assistant.decoder is None and assistant.thresholds.intent == float("inf")


def _shortest_working_seq_len(message: str) -> int:
    import re

    return int(re.search(r"use --seq-len (\d+) or more", message).group(1))


@pytest.mark.parametrize("base", ["--model", "pretrained here"])
def test_a_seq_len_too_short_for_the_sft_dialogues_is_refused_before_any_training(company, llama_dir, tmp_path,
                                                                                  base):
    """The grounded system prompt (passages) filled --seq-len: SFT found no answer token to learn only after the
    intent classifier and the pretraining had run. Now refused once the SFT's tokenizer exists (--model's, or the
    small decoder's, trained first), naming the shortest --seq-len that works."""
    from genforge.errors import ConfigError

    out = tmp_path / "support"
    model = {"--model": {"model": llama_dir}, "pretrained here": {"vocab_size": 300, "pretrain_minutes": 0.01}}[base]
    with pytest.raises(ConfigError, match=r"^--seq-len 16 leaves no SFT dialogue an answer token .* use --seq-len "
                                          r"\d+ or more"):
        build(BuildConfig(kb=[company / "faq.csv"], val=company / "val.csv", history=company / "history.jsonl",
                          out=out, seq_len=16, classify_steps=2, sft_steps=2, **model))
    assert not (out / "intent").exists() and not (out / "work" / "lm").exists() and not (out / "chat").exists()


def test_the_shortest_seq_len_named_is_the_one_sft_accepts(company, llama_dir, tmp_path):
    """The --seq-len the error names is exact: `finetune sft`'s own encoding keeps an answer token of both of its
    splits at it, and of one split not at one less."""
    from genforge.apps.support.chatmodel import SFT_DATA, check_sft_fits, prepare_chat
    from genforge.apps.support.index import build_index, load_encoder
    from genforge.apps.support.ingest import ingest
    from genforge.errors import ConfigError
    from genforge.finetune.config import SftConfig
    from genforge.finetune.data import hash_split
    from genforge.finetune.model import load_tokenizer
    from genforge.finetune.sft import encode_all, read_dialogues

    cfg = BuildConfig(kb=[company / "faq.csv"], history=company / "history.jsonl", out=tmp_path, model=llama_dir,
                      seq_len=16)
    passages = ingest(cfg.kb, cfg.chunk_chars, cfg.overlap)
    with pytest.raises(ConfigError) as refused:
        prepare_chat(cfg, read_dialogues(cfg.history), build_index(passages, load_encoder(None)), passages, tmp_path)
    need, data, tokenizer = _shortest_working_seq_len(str(refused.value)), tmp_path / SFT_DATA, load_tokenizer(llama_dir)
    check_sft_fits(tokenizer, data, BuildConfig(kb=cfg.kb, history=cfg.history, out=tmp_path, seq_len=need))
    splits = hash_split(read_dialogues(data), text_of=lambda d: "\n".join(m["content"] for m in d))
    for split in splits:
        encode_all(tokenizer, split, SftConfig(model=llama_dir, data=data, out=tmp_path / "chat", seq_len=need))
    with pytest.raises(DataError, match="keeps an assistant token"):
        for split in splits:
            encode_all(tokenizer, split, SftConfig(model=llama_dir, data=data, out=tmp_path / "chat", seq_len=need - 1))


def test_a_history_too_small_for_the_sft_split_is_refused_before_any_training(company, llama_dir, tmp_path):
    """One dialogue leaves the SFT's hash split an empty side: refused before the intent classifier, in the build's
    words (`finetune sft`'s said "give --val-data", a flag the build does not have, after all the training)."""
    history = tmp_path / "history.jsonl"
    history.write_text((company / "history.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n",
                       encoding="utf-8")
    out = tmp_path / "support"
    with pytest.raises(DataError, match=r"history.jsonl: the chat model's SFT validates on hash bucket 8 .* the 1 "
                                        r"given leave its (training|validation) set empty; give more dialogues"):
        build(BuildConfig(kb=[company / "faq.csv"], val=company / "val.csv", history=history, out=out,
                          model=llama_dir, classify_steps=2, sft_steps=2))
    assert not (out / "intent").exists() and not (out / "chat").exists()
