"""Embedding-space adversarial training: norms, exact gradients against an independent reference (the
model fed `inputs_embeds`), untouched weights, and the engine hook (grad accumulation, checkpoints)."""

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from genforge.adversarial.perturb import (
    VAT_XI,
    AdversarialObjective,
    example_norm,
    freelb,
    kl_weights,
    pgd,
    project,
    random_start,
    unit,
    wrap_adversarial,
)
from genforge.artifacts import read_manifest
from genforge.errors import ConfigError
from genforge.finetune.classify import ClassifyObjective
from genforge.finetune.config import SftConfig
from genforge.finetune.heads import Classifier
from genforge.finetune.sft import sft
from genforge.train.config import TrainConfig
from genforge.train.engine import train
from genforge.train.objectives import IGNORE, ClmObjective


def classifier() -> Classifier:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=32, type_vocab_size=1, num_labels=3, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return Classifier(BertForSequenceClassification(cfg)).train()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0], [14, 15, 16, 17, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([0, 2, 1])}


def reference_loss(model: Classifier, b: dict, delta: torch.Tensor) -> torch.Tensor:
    """The classification loss with `delta` added to the token embeddings, through `inputs_embeds` (no hooks)."""
    embeds = model.body.get_input_embeddings()(b["input_ids"]) + delta
    return F.cross_entropy(model.body(inputs_embeds=embeds, attention_mask=b["attention_mask"]).logits, b["labels"])


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def mask_of(b: dict) -> torch.Tensor:
    return b["attention_mask"].float().unsqueeze(-1)


def assert_close(got: dict, want: dict, atol: float = 1e-6) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=1e-4, msg=name)


def test_unit_and_projection_norms():
    torch.manual_seed(0)
    g, mask = torch.randn(3, 6, 16), mask_of(batch())
    u = unit(g, mask)
    assert torch.allclose(example_norm(u).flatten(), torch.ones(3)) and (u * (1 - mask)).abs().max() == 0
    big, small = 5 * u, 0.1 * u
    assert torch.allclose(example_norm(project(big, 0.5)).flatten(), torch.full((3,), 0.5))
    assert torch.equal(project(small, 0.5), small)  # inside the ball: unchanged
    start = random_start(0.3, 0.05)(torch.zeros(3, 6, 16), mask)
    assert start.requires_grad and (example_norm(start) <= 0.05 + 1e-6).all() and (start * (1 - mask)).abs().max() == 0


def test_fgm_gradients_are_clean_plus_adversarial_and_add_to_earlier_ones():
    model, b = classifier(), batch()
    for p in model.parameters():  # an earlier micro-batch's gradients must be kept and added to
        p.grad = torch.ones_like(p)
    adv = AdversarialObjective(ClassifyObjective(False), "fgm", epsilon=0.5, alpha=0.1, steps=1)
    loss = adv.train_step(model, b, 0.5)
    got = {n: g - 1 for n, g in grads(model).items()}

    model.zero_grad(set_to_none=True)
    delta = torch.zeros(3, 6, 16, requires_grad=True)
    clean = reference_loss(model, b, delta)
    (clean * 0.5).backward()
    r = 0.5 * (delta.grad * mask_of(b)) / (delta.grad * mask_of(b)).flatten(1).norm(dim=1).view(-1, 1, 1)
    (reference_loss(model, b, r) * 0.5).backward()
    assert_close(got, grads(model))
    assert loss.item() == pytest.approx(clean.item(), rel=1e-6)


def test_pgd_ascent_steps_leave_parameter_gradients_alone():
    model, b = classifier(), batch()
    adv = AdversarialObjective(ClassifyObjective(False), "pgd", epsilon=0.5, alpha=0.4, steps=3)
    loss, delta = pgd(adv, model, b, 1.0)
    got = grads(model)
    # three steps of 0.4 leave the 0.5-ball: the projection holds the perturbation on its surface
    assert torch.allclose(example_norm(delta).flatten(), torch.full((3,), 0.5), atol=1e-5)
    assert (delta * (1 - mask_of(b))).abs().max() == 0

    model.zero_grad(set_to_none=True)
    (reference_loss(model, b, torch.zeros(3, 6, 16)) + reference_loss(model, b, delta)).backward()
    assert_close(got, grads(model))


def test_freelb_averages_its_steps():
    """With a vanishing perturbation every step's gradient is the clean one: their average must equal it
    (a sum would be `steps` times larger)."""
    model, b = classifier(), batch()
    adv = AdversarialObjective(ClassifyObjective(False), "freelb", epsilon=1e-7, alpha=1e-7, steps=3)
    loss, delta = freelb(adv, model, b, 1.0)
    got = grads(model)
    assert (example_norm(delta) <= 1e-7 * (1 + 1e-4)).all()
    model.zero_grad(set_to_none=True)
    clean = reference_loss(model, b, torch.zeros(3, 6, 16))
    clean.backward()
    assert_close(got, grads(model), atol=1e-5)
    assert loss.item() == pytest.approx(clean.item(), rel=1e-4)


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb", "vat"])
def test_weights_untouched_and_hooks_removed(method):
    model, b = classifier(), batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adv = AdversarialObjective(ClassifyObjective(False), method, epsilon=1.0, alpha=0.3, steps=2)
    loss = adv.train_step(model, b, 1.0)
    assert torch.isfinite(loss)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not model.body.get_input_embeddings()._forward_hooks and not model._forward_hooks
    assert all(torch.isfinite(g).all() for g in grads(model).values())
    assert adv.name == f"classify+{method}" and adv.loss(model, b)[0].item() == pytest.approx(
        reference_loss(model, b, torch.zeros(3, 6, 16)).item(), rel=1e-5)


@pytest.mark.parametrize("method", ["pgd", "vat"])
def test_relative_sizes_scale_with_the_embedding_norm(method):
    """With relative sizes the perturbation is eps x the mean token-embedding norm: scaling the embeddings
    by 10 scales it by 10, and at the measured norm it equals the absolute run's."""
    model, b = classifier(), batch()
    weight = model.body.get_input_embeddings().weight
    norm = weight.norm(dim=1).mean().item()
    relative = AdversarialObjective(ClassifyObjective(False), method, epsilon=0.5, alpha=0.4, steps=2, relative=True)
    sized = relative.in_embedding_units(model)
    assert sized.epsilon == pytest.approx(0.5 * norm) and not sized.relative
    assert sized.alpha == pytest.approx(0.4 if method == "vat" else 0.4 * norm)  # vat's alpha is a loss weight
    with torch.no_grad():
        weight.mul_(10)
    assert relative.in_embedding_units(model).epsilon == pytest.approx(5 * norm, rel=1e-5)
    if method == "pgd":
        _, delta = pgd(relative.in_embedding_units(model), model, b, 1.0)
        assert torch.allclose(example_norm(delta).flatten(), torch.full((3,), 5 * norm), rtol=1e-4)


def test_vat_adds_a_smoothness_gradient():
    model, b = classifier(), batch()
    AdversarialObjective(ClassifyObjective(False), "vat", epsilon=1.0, alpha=1e-9, steps=1).train_step(model, b, 1.0)
    nearly_clean = grads(model)
    model.zero_grad(set_to_none=True)
    reference_loss(model, b, torch.zeros(3, 6, 16)).backward()
    clean = grads(model)
    assert_close(nearly_clean, clean, atol=1e-6)
    model.zero_grad(set_to_none=True)
    AdversarialObjective(ClassifyObjective(False), "vat", epsilon=1.0, alpha=1.0, steps=1).train_step(model, b, 1.0)
    assert any(not torch.allclose(g, clean[n], atol=1e-6) for n, g in grads(model).items())


def test_vat_on_a_multi_label_classifier_uses_the_bernoulli_kl():
    """A multi-label classifier predicts independent sigmoids: KL(p(e) || p(e + r)) is the sum of the labels'
    Bernoulli KLs. A softmax over its logits is blind to a shift of every label alike (it was used, and the
    smoothness gradient was off by ~50%). Reference: VAT written out on `inputs_embeds` with that KL."""
    model, b = classifier(), batch()
    b["labels"] = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    eps, alpha = 0.8, 1.5
    torch.manual_seed(7)
    AdversarialObjective(ClassifyObjective(True), "vat", epsilon=eps, alpha=alpha, steps=2).train_step(model, b, 0.5)
    got = grads(model)

    model.zero_grad(set_to_none=True)
    mask = mask_of(b)

    def logits(delta: torch.Tensor) -> torch.Tensor:
        embeds = model.body.get_input_embeddings()(b["input_ids"]) + delta
        return model.body(inputs_embeds=embeds, attention_mask=b["attention_mask"]).logits

    def bernoulli_kl(target: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        p, q = torch.sigmoid(target), torch.sigmoid(other)
        return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(-1).mean()

    def unit_of(g: torch.Tensor) -> torch.Tensor:
        return g * mask / (g * mask).flatten(1).norm(dim=1).view(-1, 1, 1)

    torch.manual_seed(7)
    clean = logits(torch.zeros(3, 6, 16))
    direction = torch.randn(3, 6, 16)
    for _ in range(2):
        probe = (VAT_XI * eps * unit_of(direction)).requires_grad_(True)
        (direction,) = torch.autograd.grad(bernoulli_kl(clean.detach(), logits(probe)), probe)
    smooth = bernoulli_kl(clean.detach(), logits(eps * unit_of(direction)))
    ((F.binary_cross_entropy_with_logits(clean, b["labels"]) + alpha * smooth) * 0.5).backward()
    assert_close(got, grads(model), atol=1e-6)


def test_kl_positions():
    logits = torch.zeros(2, 3, 5)
    labels = torch.tensor([[1, IGNORE, 2], [IGNORE, IGNORE, 3]])
    assert kl_weights({"labels": labels}, logits).tolist() == [[1, 0, 1], [0, 0, 1]]
    assert kl_weights({"attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}, logits).tolist() == [[1, 1, 0], [1, 0, 0]]
    assert kl_weights({}, torch.zeros(4, 3)).tolist() == [1, 1, 1, 1]


@dataclass
class RandomWindows:
    """Causal-LM batches of random tokens, a pure function of (step, micro) as the engine wants."""

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(step * 10 + micro))
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}

    def state_dict(self, step: int) -> dict:
        return {"step": step}


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=32, max_position_embeddings=32))


@pytest.mark.parametrize("method", ["vat", "freelb"])
def test_engine_trains_a_language_model_adversarially(tmp_path, method):
    def run(adversarial: str) -> tuple[LlamaForCausalLM, object]:
        cfg = TrainConfig(out=tmp_path / adversarial, max_steps=2, batch_size=2, grad_accum=2, seq_len=8,
                          warmup_steps=1, eval_every=0, save_every=0, log_every=1, bf16=False,
                          adversarial=adversarial, adv_epsilon=1.0, adv_alpha=0.5, adv_steps=2)
        model = llama()
        return model, train(model, wrap_adversarial(ClmObjective(), cfg), RandomWindows(), cfg, cfg.out)

    model, result = run(method)
    plain, _ = run("none")
    assert result.steps == 2 and result.train_loss == result.train_loss  # finite, not NaN
    saved = load_file(str(tmp_path / method / "checkpoints" / "latest" / "model.safetensors"))
    assert set(saved) <= set(model.state_dict()) and all(torch.isfinite(v).all() for v in saved.values())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters(), strict=True))
    assert wrap_adversarial(ClmObjective(), TrainConfig(out=tmp_path)) == ClmObjective()  # none: unchanged


def test_sft_with_lora_learns_under_fgm(tmp_path, llama_dir):
    """LoRA freezes the embeddings: the perturbation still gets its gradient, and the adapter still learns."""
    dialogues = tmp_path / "dialogues.jsonl"
    dialogues.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}?"},
                                                          {"role": "assistant", "content": f"answer {i}."}]}) + "\n"
                                 for i in range(40)), encoding="utf-8")
    out = sft(SftConfig(model=llama_dir, data=dialogues, out=tmp_path / "run", max_steps=6, batch_size=4, seq_len=64,
                        lr=3e-3, warmup_steps=1, eval_every=3, log_every=1, bf16=False, lora_r=4, lora_alpha=8,
                        adversarial="fgm", adv_epsilon=0.5))
    manifest = read_manifest(out, "finetune")
    assert manifest["metrics"]["val_loss"] < manifest["metrics"]["val_loss_before"]
    assert manifest["config"]["adversarial"] == "fgm" and (out / "adapter_model.safetensors").is_file()


def test_bad_settings():
    for key, value in (("adv_epsilon", 0.0), ("adv_alpha", -1.0), ("adv_steps", 0)):
        with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')} must be positive"):
            TrainConfig(out="x", **{key: value}).check()
    with pytest.raises(ConfigError, match="exposes none"):
        AdversarialObjective(ClassifyObjective(False), "fgm", 1.0, 0.3, 1).train_step(
            lambda ids, mask: torch.zeros(1, 2), batch(), 1.0)


def test_relative_sizes_stay_tensors_on_the_model_device():
    """Reading the embedding norm back (`.item()`) would wait for the GPU at every micro-batch. Meta tensors stand
    in for a GPU's: they cannot be read back at all."""
    model = classifier().to("meta")
    relative = AdversarialObjective(ClassifyObjective(False), "pgd", epsilon=0.5, alpha=0.4, steps=2, relative=True)
    sized = relative.in_embedding_units(model)
    assert sized.epsilon.device.type == "meta" and sized.alpha.device.type == "meta"
