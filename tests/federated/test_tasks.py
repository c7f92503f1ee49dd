"""One client's round on the engine, without Flower: pretraining, SFT with LoRA, FedProx's pull."""

import torch

from genforge.federated.client import Silo, local_round
from genforge.federated.config import FederatedPretrainConfig, FederatedSftConfig
from genforge.federated.partition import split
from genforge.federated.tasks import build_task, trainable


def distance(a, b):
    return sum(((a[k] - b[k]) ** 2).sum().item() for k in a) ** 0.5


def test_pretrain_round_trains_the_silo_and_fedprox_pulls_towards_the_global_model(tmp_path, packed):
    cfg = FederatedPretrainConfig(data=packed, out=tmp_path / "o", preset="tiny", batch_size=4, seq_len=32,
                                  bf16=False, clients=2, rounds=3, local_steps=4, lr=3e-3)
    task = build_task("pretrain", cfg)
    rows = split("iid", task.n, 2, alpha=1.0, seed=0)[0]
    start = {k: v.clone() for k, v in trainable(task.model).items()}
    assert len(start) == len(list(task.model.parameters()))  # full training: every tensor travels
    before = task.score()["loss"]
    free, metrics = local_round(Silo(task, rows, tmp_path / "c0"), start, 1, mu=0.0)
    assert metrics["steps"] == 4 and metrics["examples"] == len(rows)
    task.model.eval()
    with torch.no_grad():
        assert task.score()["loss"] < before
    pulled, _ = local_round(Silo(task, rows, tmp_path / "c0"), start, 1, mu=100.0)
    assert 0 < distance(pulled, start) < distance(free, start)


def test_sft_round_with_lora_sends_only_adapters(tmp_path, llama_dir, dialogues):
    cfg = FederatedSftConfig(model=llama_dir, data=dialogues, out=tmp_path / "o", batch_size=4, seq_len=64,
                             bf16=False, clients=2, rounds=2, local_steps=3, lr=1e-2, lora_r=4)
    task = build_task("sft", cfg)
    tensors = trainable(task.model)
    assert tensors and all("lora_" in k for k in tensors)
    new, metrics = local_round(Silo(task, list(range(task.n)), tmp_path / "c0"), tensors, 2, mu=0.0)
    assert distance(new, tensors) > 0 and metrics["train-loss"] > 0
