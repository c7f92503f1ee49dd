"""`genforge predict --out --resume`: a run killed midway goes on after its last whole chunk and ends with the
file an uninterrupted run writes; `--out` appears only complete; the file rules match the resumable folders'."""

import json
import re

import pytest
import tqdm
from typer.testing import CliRunner

from genforge.cli import app
from genforge.config import load_config
from genforge.errors import ArtifactError, ConfigError
from genforge.finetune import predict as predict_module
from genforge.finetune.config import PredictConfig
from genforge.finetune.predict import partial_path, predict, settings_path

CHUNK = 4
# ten texts: chunks of 4, 4 and 2; one with non-ASCII and U+2028 (json.dumps keeps it inside its line)
TEXTS = [f"profits rose {i}" for i in range(7)] + ["naïve café\u2028line", "shares fell", "losses widened"]


def config(model, data, out, **overrides) -> PredictConfig:
    return load_config(PredictConfig, overrides=dict(model=model, data=data, out=out) | overrides)


@pytest.fixture
def data(jsonl):
    return jsonl("news.jsonl", [{"text": t} for t in TEXTS])


class Chunks:
    """What predict_probs was asked: the size of each chunk, and whether the output existed at the time."""

    def __init__(self, counter, out):
        self.calls, self.out, self.sizes, self.out_seen = counter, out, [], []


@pytest.fixture
def chunks(monkeypatch, counted, tmp_path):
    """Chunks of CHUNK texts through a counted predict_probs (`chunks.calls.stop_at = n` interrupts chunk n)
    of runs into tmp_path / "preds.jsonl"."""
    monkeypatch.setattr(predict_module, "CHUNK", CHUNK)
    seen = Chunks(counted(predict_module, "predict_probs"), tmp_path / "preds.jsonl")
    counted_call = predict_module.predict_probs

    def call(model, tokenizer, texts, **kwargs):
        seen.sizes.append(len(texts))
        seen.out_seen.append(seen.out.exists())
        return counted_call(model, tokenizer, texts, **kwargs)

    monkeypatch.setattr(predict_module, "predict_probs", call)
    return seen


@pytest.fixture
def straight(classifier_dir, data, tmp_path, chunks):
    """The bytes an uninterrupted run writes."""
    predict(config(classifier_dir, data, tmp_path / "straight.jsonl"))
    chunks.sizes.clear()
    chunks.out_seen.clear()
    return (tmp_path / "straight.jsonl").read_bytes()


def interrupt(cfg, chunks, at):
    """Run `cfg`, killed as it starts chunk `at`: no output yet, the partial file holds the chunks before."""
    chunks.calls.count, chunks.calls.stop_at = 0, at
    with pytest.raises(KeyboardInterrupt):
        predict(cfg)
    chunks.calls.count, chunks.calls.stop_at = 0, None
    assert not cfg.out.exists() and settings_path(cfg.out).is_file()
    assert partial_path(cfg.out).read_bytes().count(b"\n") == CHUNK * (at - 1)
    chunks.sizes.clear()
    chunks.out_seen.clear()


def test_interrupted_run_resumes_to_the_same_file(monkeypatch, classifier_dir, data, straight, chunks):
    rows = [json.loads(line) for line in straight.decode().split("\n")[:-1]]
    assert [r["text"] for r in rows] == TEXTS and "naïve café" in straight.decode()

    cfg = config(classifier_dir, data, chunks.out)
    interrupt(cfg, chunks, at=3)
    bars, real_tqdm = [], tqdm.tqdm
    monkeypatch.setattr(tqdm, "tqdm", lambda *args, **kwargs: bars.append(kwargs) or real_tqdm(*args, **kwargs))
    assert predict(config(classifier_dir, data, chunks.out, resume=True)) == chunks.out
    assert chunks.out.read_bytes() == straight
    assert (bars[0]["initial"], bars[0]["total"]) == (8, 10)  # the progress bar starts at the texts kept
    assert chunks.sizes == [2] and chunks.out_seen == [False]  # only the last chunk is predicted again
    assert not partial_path(chunks.out).exists() and not settings_path(chunks.out).exists()

    # a finished --out is redone by a new run, and replaced only once that run is complete
    chunks.out.write_text("an older run's\n")
    chunks.sizes.clear()
    predict(cfg)
    assert chunks.out.read_bytes() == straight and chunks.sizes == [4, 4, 2]


def test_a_cut_line_is_predicted_again_with_its_chunk(classifier_dir, data, straight, chunks):
    cfg = config(classifier_dir, data, chunks.out)
    interrupt(cfg, chunks, at=3)
    partial = partial_path(chunks.out)
    partial.write_bytes(partial.read_bytes()[:-5])  # a kill while line 8 was written: chunk 2 is incomplete
    predict(config(classifier_dir, data, chunks.out, resume=True))
    assert chunks.out.read_bytes() == straight and chunks.sizes == [4, 2]

    chunks.out.unlink()
    interrupt(cfg, chunks, at=2)
    with partial.open("ab") as f:
        f.write(b'{"text": "profits ro')  # the first line of chunk 2, cut
    predict(config(classifier_dir, data, chunks.out, resume=True))
    assert chunks.out.read_bytes() == straight and chunks.sizes == [4, 2]


def test_a_damaged_or_foreign_partial_file_is_refused(classifier_dir, data, chunks):
    cfg = config(classifier_dir, data, chunks.out)
    interrupt(cfg, chunks, at=3)
    partial = partial_path(chunks.out)
    lines = partial.read_bytes().split(b"\n")
    resume = config(classifier_dir, data, chunks.out, resume=True)

    partial.write_bytes(b"\n".join([lines[0], b"{not json", *lines[2:]]))
    with pytest.raises(ArtifactError, match=r"preds\.jsonl\.partial is corrupt \(line 2 is no prediction"):
        predict(resume)
    other = json.dumps(json.loads(lines[0]) | {"text": "something else"}).encode()
    partial.write_bytes(b"\n".join([other, *lines[1:]]))
    with pytest.raises(ArtifactError, match="line 1 is not the prediction of text 1"):
        predict(resume)
    assert chunks.sizes == [] and not chunks.out.exists()


def test_resume_refuses_other_settings(classifier_dir, data, jsonl, chunks):
    cfg = config(classifier_dir, data, chunks.out)
    interrupt(cfg, chunks, at=2)
    before = partial_path(chunks.out).read_bytes()
    with pytest.raises(ConfigError, match=r"--resume: threshold 0\.7 differs from the interrupted run's 0\.5; "):
        predict(config(classifier_dir, data, chunks.out, resume=True, threshold=0.7))
    more = jsonl("more.jsonl", [{"text": t} for t in [*TEXTS, "one more"]])
    with pytest.raises(ConfigError, match=re.escape(f"--resume: the data {more} is not the interrupted run's")):
        predict(config(classifier_dir, more, chunks.out, resume=True))
    assert partial_path(chunks.out).read_bytes() == before and chunks.sizes == []


def test_file_rules(classifier_dir, data, chunks):
    with pytest.raises(ArtifactError, match=r"nothing to resume: .*preds\.jsonl\.partial does not exist; drop"):
        predict(config(classifier_dir, data, chunks.out, resume=True))
    interrupt(config(classifier_dir, data, chunks.out), chunks, at=2)
    with pytest.raises(ArtifactError, match=r"preds\.jsonl\.partial holds an unfinished run: add --resume"):
        predict(config(classifier_dir, data, chunks.out))
    with pytest.raises(ConfigError, match="--resume continues an interrupted --out run"):
        config(classifier_dir, data, None, resume=True)


def test_cli_refusals_are_one_line(tmp_path, classifier_dir, data):
    for args, message in [
        (["--out", tmp_path / "preds.jsonl", "--resume"], "nothing to resume"),
        (["--resume"], "--resume continues an interrupted --out run"),
    ]:
        result = CliRunner().invoke(app, [str(a) for a in ["predict", "--model", classifier_dir, "--data", data,
                                                           *args]])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_classify_run_killed_before_its_manifest_is_refused(tmp_path, classifier_dir, data):
    """A classify run killed while exporting (or a redo killed before it) leaves weights at its top but no
    manifest.json: predict must refuse it in one line, not label texts with those weights."""
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(classifier_dir, killed)
    (killed / "manifest.json").unlink()
    result = CliRunner().invoke(app, ["predict", "--model", str(killed), "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert "is an unfinished genforge run" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
