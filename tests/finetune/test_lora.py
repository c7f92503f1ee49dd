import json
import warnings

import pytest
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from genforge.errors import ArtifactError, ConfigError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.lora import apply_lora
from genforge.finetune.model import freeze, hf_config, layer_list, trainable_params

TEXTS = ["profits rose sharply 1", "weak demand hit the stock 3", "the company beat expectations"]


def lora_cfg(model, data, out, **overrides) -> ClassifyConfig:
    values = dict(model=model, data=data, out=out, max_steps=4, batch_size=8, seq_len=32, lr=1e-2, warmup_steps=1,
                  eval_every=2, log_every=1, bf16=False, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    values.update(overrides)
    return ClassifyConfig(**values)


def probs_of(folder):
    model, tokenizer, info = load_classifier(folder)
    return predict_probs(model, tokenizer, TEXTS, seq_len=32, multi_label=info["multi_label"])


@pytest.mark.parametrize("head", ["linear", "lstm"])
def test_adapter_and_merged_give_the_same_predictions(tmp_path, bert_dir, sentiment_csv, head):
    adapter = classify(lora_cfg(bert_dir, sentiment_csv, tmp_path / "adapter", head=head))
    merged = classify(lora_cfg(bert_dir, sentiment_csv, tmp_path / "merged", head=head, merge=True))
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    a, m = probs_of(adapter), probs_of(merged)
    assert a == pytest.approx(m, abs=1e-5)
    if head == "linear":  # plain transformers + peft, unmerged, as docs/finetune.md shows
        info = json.loads((adapter / "classifier.json").read_text())
        config = AutoConfig.from_pretrained(bert_dir, num_labels=len(info["labels"]),
                                            id2label=dict(enumerate(info["labels"])))
        base = AutoModelForSequenceClassification.from_pretrained(bert_dir, config=config)
        peft_model = PeftModel.from_pretrained(base, adapter).eval()
        tok = AutoTokenizer.from_pretrained(adapter)
        with torch.no_grad():
            unmerged = torch.softmax(peft_model(**tok(TEXTS, return_tensors="pt", padding=True)).logits, -1)
        assert a == pytest.approx(unmerged.numpy(), abs=1e-5)
        # the merged run is a standard HF folder
        hf = AutoModelForSequenceClassification.from_pretrained(merged).eval()
        with torch.no_grad():
            plain = torch.softmax(hf(**tok(TEXTS, return_tensors="pt", padding=True)).logits, -1)
        assert m == pytest.approx(plain.numpy(), abs=1e-5)


def test_lora_trains_only_the_adapter_and_the_head(bert_dir):
    from genforge.finetune.classifier import build_classifier

    model, new = build_classifier(bert_dir, head="linear", labels=["a", "b"], multi_label=False, pad_id=0)
    assert new == ["bert.pooler.dense", "classifier"]  # an MLM checkpoint has no pooler
    full = trainable_params(model)
    model.body = apply_lora(model.body, r=2, alpha=4, dropout=0.0, targets=["query", "value"], task_type="SEQ_CLS")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "classifier" in n for n in names)
    assert trainable_params(model)["trainable"] < full["trainable"] / 20
    with pytest.raises(ArtifactError, match="check --lora-targets"):
        apply_lora(build_classifier(bert_dir, head="linear", labels=["a", "b"], multi_label=False, pad_id=0)[0].body,
                   r=2, alpha=4, dropout=0.0, targets=["no_such_module"], task_type="SEQ_CLS")


def test_wrapping_a_model_prints_no_deprecation_warning(llama_dir):
    """Every LoRA run printed peft's call of transformers' deprecated `is_gradient_checkpointing` (a
    FutureWarning the user can do nothing about)."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(llama_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(lm, r=2, alpha=4, dropout=0.0, targets=[], task_type="CAUSAL_LM")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_freezing_and_dropout_override(bert_dir, llama_dir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(bert_dir)
    freeze(model, layers=1, embeddings=True)
    blocks = layer_list(model)
    assert not any(p.requires_grad for p in blocks[0].parameters())
    assert all(p.requires_grad for p in blocks[1].parameters())
    assert not any(m.weight.requires_grad for m in model.modules() if isinstance(m, torch.nn.Embedding))
    assert model.embeddings.LayerNorm.weight.requires_grad  # only the lookup tables are frozen
    with pytest.raises(ConfigError, match="only 2 layers"):
        freeze(model, layers=3)
    assert hf_config(bert_dir, dropout=0.3).hidden_dropout_prob == 0.3
    assert hf_config(bert_dir, dropout=0.3).attention_probs_dropout_prob == 0.3
    assert hf_config(llama_dir, dropout=0.2).attention_dropout == 0.2
    assert hf_config(bert_dir).hidden_dropout_prob == AutoConfig.from_pretrained(bert_dir).hidden_dropout_prob


def test_config_checks(bert_dir, sentiment_csv, tmp_path):
    with pytest.raises(ConfigError, match="--merge only applies to LoRA"):
        ClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path, merge=True).check()
    with pytest.raises(ConfigError, match="--freeze-layers is for full fine-tuning"):
        lora_cfg(bert_dir, sentiment_csv, tmp_path, freeze_layers=1).check()
    with pytest.raises(ConfigError, match="--dropout must be"):
        ClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path, dropout=1.5).check()
