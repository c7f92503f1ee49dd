import json

import yaml

from genforge.models.card import write_model_card


def test_card_has_front_matter_lineage_metrics_and_usage(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 128,
                                                      "num_hidden_layers": 2, "vocab_size": 320}))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "loss.png").write_bytes(b"png")
    raw = {"stage": "data.prepare", "created": "2026-01-01T00:00:00+00:00",
           "inputs": [{"path": "/data/a.txt", "sha256": "ab" * 32}], "parent": None}
    pack = {"stage": "data.pack", "created": "2026-01-02T00:00:00+00:00",
            "inputs": [{"path": "d/train.jsonl", "sha256": "cd" * 32}], "parent": raw}
    manifest = {"stage": "pretrain", "created": "2026-01-03T00:00:00+00:00", "objective": "clm",
                "inputs": [{"path": "d/train.bin", "sha256": "ef" * 32}], "parent": pack,
                "config": {"lr": 0.001, "preset": "tiny"}, "metrics": {"val_bits_per_byte": 2.0512, "steps": 1000},
                "model": {"architecture": "LlamaForCausalLM", "params": 1_234_567, "non_embedding_params": 400_000}}
    text = write_model_card(tmp_path, manifest).read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "transformers" and "genforge" in front["tags"]
    assert front["pipeline_tag"] == "text-generation"
    assert "| val_bits_per_byte | 2.051 |" in text and "| steps | 1,000 |" in text
    assert "1.23 M (1,234,567)" in text and "0.40 M (400,000)" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| 2 |")]
    assert "pretrain" in rows[0] and "efefefefefef" in rows[0]
    assert "data.prepare" in rows[1] and "`a.txt` abababababab" in rows[1]
    assert "![loss curve](logs/loss.png)" in text and "AutoModelForCausalLM.from_pretrained" in text
    assert "lr: 0.001" in text


def test_a_stage_whose_manifest_is_not_written_yet_dates_its_own_row(tmp_path):
    """The card is written before the manifest: its own row carries the time it is written, not "now"."""
    from datetime import UTC, datetime

    from genforge.models.card import stage_lineage_rows

    (tmp_path / "train.bin").write_bytes(b"tokens")
    before = datetime.now(UTC).replace(microsecond=0)
    rows = stage_lineage_rows("finetune", [tmp_path / "train.bin"], None, "some/base-model")
    created = rows[2].split("|")[3].strip()
    assert before <= datetime.fromisoformat(created) <= datetime.now(UTC)
    assert rows[3].startswith("| 1 | (`some/base-model`, a model from outside genforge) | - |")


def test_a_model_continued_from_outside_genforge_names_its_base(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    manifest = {"stage": "pretrain", "objective": "mlm", "parent": None, "config": {"model": "/models/minilm"},
                "model": {"architecture": "BertForMaskedLM", "params": 22_000_000, "base_model": None}}
    assert "| continued from | `/models/minilm` (from outside genforge) |" in write_model_card(tmp_path, manifest).read_text()
