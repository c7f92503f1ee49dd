"""The same apps on Flower's deployment engine: a real SuperLink and two SuperNodes on localhost."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from genforge.artifacts import read_manifest
from genforge.federated.config import FederatedClassifyConfig
from genforge.federated.run import federated


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, "the SuperLink exited at start-up"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.slow
def test_two_supernodes_complete_a_two_round_run(tmp_path, bert_dir, sentiment_csv, monkeypatch):
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FLWR_TELEMETRY_ENABLED": "0",
           "OMP_NUM_THREADS": "1"}
    port = free_port()
    log = (tmp_path / "flower.log").open("w")
    procs = [subprocess.Popen([str(bin_dir / "flower-superlink"), "--insecure", "--port", str(port),
                               "--database", str(tmp_path / "state.db")], env=env, stdout=log, stderr=log)]
    try:
        wait_listening(port, procs[0])
        for k in range(2):
            procs.append(subprocess.Popen(
                [str(bin_dir / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                 "--port", str(free_port()), "--node-config", f"partition-id={k} num-partitions=2"],
                env=env, stdout=log, stderr=log))
        cfg = FederatedClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path / "fed", clients=2, rounds=2,
                                      local_steps=2, batch_size=8, seq_len=32, lr=3e-3, bf16=False,
                                      engine="deployment", superlink=f"127.0.0.1:{port}")
        out = federated(cfg, "classify")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        log.close()
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(sorted(c["partition_id"] for c in r["clients"]) == [0, 1] for r in rows[1:])
    manifest = read_manifest(out, "finetune")
    assert manifest["federated"]["engine"] == "deployment" and (out / "model.safetensors").is_file()
