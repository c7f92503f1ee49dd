"""SecAgg+ on Flower's simulation: the masked sum unmasks to what plain FedAvg computes, resumed runs too."""

import json

import pytest
from safetensors.torch import load_file

from genforge.federated.config import FederatedClassifyConfig
from genforge.federated.run import federated


@pytest.mark.slow
def test_secure_aggregation_equals_plain_averaging_across_a_resume(tmp_path, bert_dir, sentiment_csv):
    def run(name, secagg, rounds, resume=False):
        return federated(FederatedClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path / name, clients=3,
                                                 rounds=rounds, local_steps=3, batch_size=8, seq_len=32, lr=3e-3,
                                                 bf16=False, secagg=secagg, resume=resume), "classify")

    plain = load_file(run("plain", False, 2) / "model.safetensors")
    run("secure", True, 1)
    secure_dir = run("secure", True, 2, resume=True)  # round 2 after the server state of round 1
    secure = load_file(secure_dir / "model.safetensors")
    rounds = [json.loads(line)["round"] for line in (secure_dir / "rounds.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2]
    moved = max((plain[k] - load_file(bert_dir / "model.safetensors").get(k, plain[k])).abs().max().item()
                for k in plain)
    assert moved > 1e-4  # the rounds changed the model ...
    assert max((secure[k] - plain[k]).abs().max().item() for k in plain) < 2e-4  # ... and the sums agree
