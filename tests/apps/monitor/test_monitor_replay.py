"""`genforge app monitor replay`: a timed stream whose injected surges really double the negative share."""

import json

import pytest
from typer.testing import CliRunner

from genforge.apps.monitor.config import MonitorReplayConfig
from genforge.apps.monitor.replay import replay
from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.errors import ConfigError


def test_replay_injects_known_surges(tmp_path):
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\n" + "".join(f"bad news {i},0\ngood news {i},1\nflat news {i},2\n" for i in range(40)))
    out = replay(MonitorReplayConfig(data=[f"{data}#0=negative,1=positive,2=neutral"], out=tmp_path / "r", days=6,
                                     per_hour=60, base=0.2, surges=2, surge_hours=6, entities=["A", "B"]))
    items = [json.loads(line) for line in (out / "stream.jsonl").read_text().splitlines()]
    surges = json.loads((out / "surges.json").read_text())
    assert read_manifest(out, stage="app.monitor.replay")["metrics"] == {"items": len(items), "surges": 2}
    assert [s["key"] for s in surges] == ["A", "B"] and all(s["end"] - s["start"] == 6 * 3600 for s in surges)
    assert len({i["id"] for i in items}) == len(items) and [i["ts"] for i in items] == sorted(i["ts"] for i in items)
    inside = [i for i in items if any(s["key"] == i["entity"] and s["start"] <= i["ts"] < s["end"] for s in surges)]
    outside = [i for i in items if i not in inside]
    share = lambda rows: sum(r["text"].startswith("bad") for r in rows) / len(rows)  # noqa: E731
    assert 0.15 < share(outside) < 0.25 and 0.3 < share(inside) < 0.5
    with pytest.raises(ConfigError, match="base x --factor"):
        MonitorReplayConfig(data=["x"], out=tmp_path, base=0.6).check()


@pytest.mark.parametrize("flags,message", [
    (["--start", "yesterday"], "bad --start 'yesterday'"),
    (["--days", "3", "--surges", "50", "--surge-hours", "48"], "--surge-hours must be in 1..21 for --days 3"),
    (["--surge-hours", "0"], "--surge-hours must be in 1.."),
    (["--surges", "-1"], "--surges must be >= 0"),
    (["--per-hour", "100000000"], "a replay holds at most 10,000,000"),
    (["--days", "100000000"], "--days must be in 3..3660"),
    (["--base", "0"], "--base must be in (0, 1]"),
    (["--entities", " "], "--entities must be names such as AAPL; got ['A', 'B', ' ']"),
])
def test_bad_replay_settings_are_refused_before_anything_is_written(tmp_path, flags, message):
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\n" + "".join(f"bad news {i},negative\ngood news {i},positive\n" for i in range(20)))
    result = CliRunner().invoke(app, ["app", "monitor", "replay", "--data", str(data), "--out", str(tmp_path / "r"),
                                      "--entities", "A", "--entities", "B", *flags])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r").exists()  # no folder, no half-written stream


def test_surges_that_do_not_fit_are_named(tmp_path):
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\n" + "".join(f"bad news {i},negative\ngood news {i},positive\n" for i in range(20)))
    result = CliRunner().invoke(app, ["app", "monitor", "replay", "--data", str(data), "--out", str(tmp_path / "r"),
                                      "--days", "3", "--surges", "50", "--per-hour", "1", "--entities", "A"])
    assert result.exit_code == 0, result.output
    made = json.loads((tmp_path / "r" / "surges.json").read_text())
    assert f"warning: only {len(made)} of 50 surges of 6 hours fit in 3 days" in result.output and len(made) < 50
