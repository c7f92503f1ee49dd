"""SecAgg+ on Flower's simulation: the masked sum unmasks to what plain FedAvg computes; a resumed run
continues with the right round."""

import json

import pytest
from safetensors.torch import load_file

from genforge.federated.client import round_config
from genforge.federated.config import FederatedClassifyConfig, FederatedPretrainConfig
from genforge.federated.run import federated


@pytest.mark.slow
def test_secure_aggregation_equals_plain_averaging_and_resumes(tmp_path, bert_dir, sentiment_csv):
    def config(name, secagg, rounds=1, resume=False):
        return FederatedClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path / name, clients=3,
                                       rounds=rounds, local_steps=3, batch_size=8, seq_len=32, lr=3e-3, bf16=False,
                                       secagg=secagg, resume=resume)

    def run(*args, **kwargs):
        return federated(config(*args, **kwargs), "classify")

    secure, plain = load_file(run("secure", True) / "model.safetensors"), load_file(run("plain", False) /
                                                                                    "model.safetensors")
    moved = max((plain[k] - load_file(bert_dir / "model.safetensors").get(k, plain[k])).abs().max().item()
                for k in plain)
    assert moved > 1e-4  # the round changed the model ...
    assert max((secure[k] - plain[k]).abs().max().item() for k in plain) < 1e-4  # ... and the sums agree

    # Resumed to 2 rounds, the clients train round 2 at round 2's learning rate. (Its weights are not compared
    # with an uninterrupted run's: SecAgg+ rounds stochastically when it quantises, and Adam turns that 1e-5
    # into steps of up to lr on coordinates whose gradient is ~0.)
    rows = [json.loads(line) for line in (run("secure", True, 2, resume=True) / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert {c["round"] for c in rows[2]["clients"]} == {2} and len(rows[2]["clients"]) == 3
    round_two = round_config(config("secure", True, 2), 2, 3).lr
    assert round_two < 3e-3 and all(c["lr"] == pytest.approx(round_two) for c in rows[2]["clients"])


@pytest.mark.slow
def test_secure_aggregation_of_real_pretraining_silos_equals_plain_averaging(tmp_path, packed, pack_shakespeare):
    """By-file silos of token windows, of different sizes: each client scales its update by its size over the
    largest (max_weight, from the launcher), so the masked sum unmasks to FedAvg's weighted mean. (With the
    size unknown, max_weight was 1: updates scaled by ~100, clipped to +-8, a garbage model.)"""
    def run(name, secagg):
        cfg = FederatedPretrainConfig(client_data=[packed, pack_shakespeare(30_000), packed], partition="by-file",
                                      out=tmp_path / name, clients=3, rounds=1, local_steps=2, batch_size=4,
                                      seq_len=32, preset="tiny", eval_batches=1, lr=3e-3, bf16=False, secagg=secagg)
        return load_file(federated(cfg, "pretrain") / "model.safetensors")

    secure, plain = run("secure", True), run("plain", False)
    assert max((secure[k] - plain[k]).abs().max().item() for k in plain) < 1e-4
