import json
import os

from genforge.train.logs import MetricsLog


def test_a_resume_replaces_metrics_jsonl_whole_instead_of_truncating_it_in_place(tmp_path):
    """On --resume the log is rewritten without the steps after the checkpoint. Rewritten in place (truncate,
    then write), a kill in between would leave the record of the earlier steps empty; written beside and
    renamed, the old file stays whole until the new one replaces it. A hard link to the old file shows which."""
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = [{"step": s, "kind": "train", "loss": 1.0 / s} for s in range(1, 7)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (logs / "metrics.jsonl").write_text(text)
    os.link(logs / "metrics.jsonl", tmp_path / "old-inode.jsonl")
    log = MetricsLog(logs, resume_step=3)
    log.close()
    kept = [json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept] == [1, 2, 3]
    assert (tmp_path / "old-inode.jsonl").read_text() == text, "metrics.jsonl was truncated in place"
