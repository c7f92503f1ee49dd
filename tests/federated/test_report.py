"""The finished run folder: the same lineage and model card as centralized training, plus the federation's part.

`finish` runs in the ServerApp after the last round; here it is called on a task built as the server builds it,
with the rows a run would have logged, so no Flower simulation is needed.
"""

import pytest

from genforge.artifacts import lineage, read_manifest, sha256_file
from genforge.federated.config import FederatedClassifyConfig, FederatedPretrainConfig
from genforge.federated.report import finish
from genforge.federated.run import silos
from genforge.federated.tasks import build_task

ROWS = [{"round": 0, "seconds": 1.0, "val_loss": 0.7, "bytes": 0},
        {"round": 1, "seconds": 2.0, "val_loss": 0.6, "bytes": 100, "failed": 0, "rejected": 0}]
PRIVACY = {"epsilon": 4.7285, "delta": 1e-5, "releases": 1}


def finished(kind, cfg, privacy=None):
    task = build_task(kind, cfg)
    clients, _ = silos(kind, cfg, task)
    info = {"clients": clients, "labels": task.label_set, "work_dir": str(cfg.out / "clients"), "started": None}
    (cfg.out / "logs").mkdir(parents=True)  # the launcher made it (partition.png)
    return finish(task, info, ROWS, privacy)


def test_a_classifier_records_its_inputs_and_gets_the_centralized_card(tmp_path, bert_dir, sentiment_rows,
                                                                         csv_file):
    """Before: an empty `inputs` list (no lineage of the data), and a card without front matter, Lineage or
    How to use, and without the DP guarantee the run was made with."""
    data, val = csv_file("train.csv", sentiment_rows), csv_file("val.csv", sentiment_rows[::5])
    cfg = FederatedClassifyConfig(model=bert_dir, data=data, val_data=val, out=tmp_path / "fed", clients=2,
                                  rounds=1, local_steps=1, batch_size=8, seq_len=32, bf16=False, lora_r=4,
                                  dp_noise=1.0, dp_clip=0.5)
    out = finished("classify", cfg, PRIVACY)
    manifest = read_manifest(out, "finetune")
    assert [(i["path"], i["sha256"]) for i in manifest["inputs"]] == [(str(p.absolute()), sha256_file(p))
                                                                      for p in (data, val)]
    assert manifest["model"]["base_model"] == str(bert_dir) and manifest["model"]["params"] > 0
    assert manifest["federated"]["privacy"] == PRIVACY
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: peft\npipeline_tag: text-classification\n")
    for section in ("## Lineage", "## How to use", "genforge predict --model", "## Federated training"):
        assert section in card
    assert "`train.csv` " + sha256_file(data)[:12] in card
    assert "epsilon 4.729 at delta 1e-05 after 1 noisy rounds" in card


@pytest.mark.parametrize("partition", ["iid", "by-file"])
def test_a_pretrained_lm_descends_from_its_packed_data(tmp_path, packed, partition):
    """Before: `parent` None, so `lineage` ended at the model and never reached the data it was trained on."""
    where = {"data": packed} if partition == "iid" else {"client_data": [packed, packed]}
    cfg = FederatedPretrainConfig(out=tmp_path / "lm", preset="tiny", batch_size=4, seq_len=32, bf16=False,
                                  clients=2, rounds=1, local_steps=1, eval_batches=1, partition=partition, **where)
    out = finished("pretrain", cfg)
    manifest = read_manifest(out, "pretrain")
    assert manifest["parent"] == read_manifest(packed, "data.pack", filename="pack.json")
    assert len(lineage(manifest)) >= 3  # the model, the packed data, the prepared data
    assert [i["path"] for i in manifest["inputs"]] == [str(packed / f) for f in
                                                       (["train.bin", "val.bin"] if partition == "iid" else
                                                        ["val.bin"])]
    assert manifest["objective"] == "clm" and manifest["model"]["architecture"] == "LlamaForCausalLM"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert "AutoModelForCausalLM.from_pretrained" in card and "## Federated training" in card
