"""SecAgg+ on Flower's simulation: the masked sum unmasks to what plain FedAvg computes."""

import pytest
from safetensors.torch import load_file

from genforge.federated.config import FederatedClassifyConfig
from genforge.federated.run import federated


@pytest.mark.slow
def test_secure_aggregation_equals_plain_averaging(tmp_path, bert_dir, sentiment_csv):
    def run(name, secagg):
        return federated(FederatedClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path / name, clients=3,
                                                 rounds=1, local_steps=3, batch_size=8, seq_len=32, lr=3e-3,
                                                 bf16=False, secagg=secagg), "classify")

    secure, plain = load_file(run("secure", True) / "model.safetensors"), load_file(run("plain", False) /
                                                                                    "model.safetensors")
    moved = max((plain[k] - load_file(bert_dir / "model.safetensors").get(k, plain[k])).abs().max().item()
                for k in plain)
    assert moved > 1e-4  # the round changed the model ...
    assert max((secure[k] - plain[k]).abs().max().item() for k in plain) < 1e-4  # ... and the sums agree
