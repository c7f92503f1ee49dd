import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from genforge.artifacts import read_manifest
from genforge.train.distributed import init_distributed
from genforge.train.pretrain import pretrain


@pytest.mark.e2e
@pytest.mark.parametrize("objective, mode", [("clm", "ddp"), ("mlm", "fsdp")])
def test_two_processes_train_like_one(tmp_path, packed, tiny, objective, mode):
    """torchrun with 2 CPU processes (gloo) and grad-accum 2 = one process with grad-accum 2, same seed.

    Three eval batches over two processes: the odd one is scored, not dropped (the val loss must not depend
    on the process count), and under FSDP the other process runs a padding batch in step with it."""
    single = pretrain(tiny(tmp_path / "single", objective=objective, grad_accum=2, max_steps=4, eval_batches=3))
    flags = ["--data", packed, "--out", tmp_path / "ddp", "--objective", objective, "--preset", "tiny",
             "--grad-accum", "2", "--max-steps", "4", "--batch-size", "4", "--seq-len", "32", "--warmup-steps", "2",
             "--eval-every", "3", "--eval-batches", "3", "--save-every", "3", "--log-every", "1", "--no-bf16",
             "--fsdp" if mode == "fsdp" else "--no-fsdp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "genforge.cli", "pretrain", *map(str, flags)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = tmp_path / "ddp"
    a = load_file(single / "checkpoints" / "latest" / "model.safetensors")
    b = load_file(ddp / "checkpoints" / "latest" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-5), f"{name}: {(a[name] - b[name]).abs().max()}"
    m_single, m_ddp = read_manifest(single)["metrics"], read_manifest(ddp)["metrics"]
    assert m_ddp["tokens"] == m_single["tokens"]  # the same global batch
    assert m_ddp["val_loss"] == pytest.approx(m_single["val_loss"], abs=1e-4)  # eval sharded over ranks
    assert m_ddp["train_loss"] == pytest.approx(m_single["train_loss"], abs=1e-4)
    # checkpoints are launch-independent: a 2-process run continues in one process
    more = pretrain(replace(tiny(ddp, objective=objective, grad_accum=2, max_steps=5, eval_batches=3), resume=True))
    assert read_manifest(more)["metrics"]["steps"] == 5


def test_fp32_matmuls_stay_exact(monkeypatch):
    """`--no-bf16` promises exact fp32: setting up the process must not turn TF32 on (precision "high")."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # keep the test's thread count
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        init_distributed()
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
