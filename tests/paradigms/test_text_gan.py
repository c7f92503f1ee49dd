"""Text GAN losses, rollouts and the Gumbel relaxation: signs, and gradients only where they belong."""

import pytest
import torch

from genforge.paradigms.sequence import LstmGenerator, rollout_rewards, sample, token_log_probs
from genforge.paradigms.text_gan import (
    CnnDiscriminator,
    discriminator_loss,
    gumbel_beta,
    gumbel_sample,
    policy_gradient_loss,
    rsgan_discriminator_loss,
    rsgan_generator_loss,
)

V, L = 12, 6


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return LstmGenerator(V, 8, 8), CnnDiscriminator(V, L, embed_size=8, filters=4, dropout=0.0)


def grads(module):
    return [p.grad for p in module.parameters()]


def test_discriminator_loss_sign_and_no_generator_gradient(nets):
    gen, disc = nets
    real = torch.randint(0, V, (4, L))
    _, soft = gumbel_sample(gen, 4, L, 0, beta=1.0)  # differentiable fakes: the loss must still not reach G
    loss = discriminator_loss(disc, real, soft)
    loss.backward()
    assert all(g is None for g in grads(gen))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(disc))
    # a discriminator that calls real "real" and fake "fake" has a lower loss than the reverse
    right = discriminator_loss(lambda x: torch.full((4,), 5.0) if x.dtype == torch.long else torch.full((4,), -5.0),
                               real, soft)
    wrong = discriminator_loss(lambda x: torch.full((4,), -5.0) if x.dtype == torch.long else torch.full((4,), 5.0),
                               real, soft)
    assert right < 0.1 < 10 < wrong


def test_policy_gradient_moves_only_the_generator_toward_rewarded_tokens(nets):
    gen, disc = nets
    seqs = torch.full((8, L), 3)
    before = token_log_probs(gen, seqs, 0).mean().item()
    loss = policy_gradient_loss(gen, seqs, torch.ones(8, L), 0)
    loss.backward()
    assert all(g is None for g in grads(disc))
    opt = torch.optim.SGD(gen.parameters(), lr=0.5)
    opt.step()
    rewarded = token_log_probs(gen, seqs, 0).mean().item()
    assert rewarded > before  # positive reward: more likely
    gen.zero_grad()
    policy_gradient_loss(gen, seqs, -torch.ones(8, L), 0).backward()
    opt.step()
    assert token_log_probs(gen, seqs, 0).mean().item() < rewarded  # negative reward: less likely


def test_rollouts_keep_the_prefix_and_score_the_full_sequence(nets):
    gen, _ = nets
    seqs = sample(gen, 5, L, 0)
    assert seqs.shape == (5, L) and seqs.dtype == torch.long
    prefix = seqs[:, :2]
    done = sample(gen, 5, L, 0, prefix=prefix)
    assert torch.equal(done[:, :2], prefix)

    def share_of_threes(s):  # a known reward: the fraction of token 3
        return (s == 3).float().mean(1)

    q = rollout_rewards(gen, share_of_threes, seqs, 0, rollouts=4)
    assert q.shape == (5, L)
    assert torch.allclose(q[:, -1], share_of_threes(seqs))
    forced = torch.full((5, L), 3)
    assert torch.allclose(rollout_rewards(gen, share_of_threes, forced, 0, 4)[:, -1], torch.ones(5))
    # with a prefix of L-1 threes every completion keeps at least (L-1)/L of them
    assert (rollout_rewards(gen, share_of_threes, forced, 0, 4)[:, -2] >= (L - 1) / L - 1e-6).all()


def test_rollouts_run_on_a_decoder_preset_too():
    from genforge.models.presets import build_model, model_config

    torch.manual_seed(0)
    decoder = build_model(model_config("clm", "custom", vocab_size=V, max_positions=L + 1, special_ids={},
                                       overrides={"hidden_size": 16, "num_layers": 1, "num_heads": 2}), "clm")
    seqs = sample(decoder, 3, L, 0)
    q = rollout_rewards(decoder, lambda s: (s == 1).float().mean(1), seqs, 0, rollouts=2)
    assert q.shape == (3, L) and ((q >= 0) & (q <= 1)).all()


def test_gumbel_relaxation_is_differentiable_and_sharpens(nets):
    gen, disc = nets
    tokens, soft = gumbel_sample(gen, 4, L, 0, beta=1.0)
    assert soft.shape == (4, L, V) and torch.allclose(soft.sum(-1), torch.ones(4, L))
    loss = rsgan_generator_loss(disc, torch.randint(0, V, (4, L)), soft)
    loss.backward()
    assert any(g is not None and g.abs().sum() > 0 for g in grads(gen))  # the gradient reaches the generator
    torch.manual_seed(1)
    tokens, sharp = gumbel_sample(gen, 4, L, 0, beta=1000.0)
    assert torch.equal(sharp.argmax(-1), tokens) and (sharp.max(-1).values > 0.99).all()
    gen.zero_grad()
    disc.zero_grad()
    rsgan_discriminator_loss(disc, torch.randint(0, V, (4, L)), soft).backward()
    assert all(g is None for g in grads(gen))


def test_gumbel_temperature_schedule():
    assert gumbel_beta(0, 100, 100.0) == 1.0
    assert gumbel_beta(100, 100, 100.0) == pytest.approx(100.0)
    assert gumbel_beta(50, 100, 100.0) == pytest.approx(10.0)
    assert all(gumbel_beta(e, 10, 50.0) < gumbel_beta(e + 1, 10, 50.0) for e in range(10))


def test_seqgan_scores_rollouts_without_discriminator_dropout(tmp_path, monkeypatch):
    """SeqGAN's rewards come from the discriminator with dropout off (its get_reward): scored twice, the same
    sequences get the same reward; the discriminator trains with dropout again afterwards."""
    from genforge.paradigms import adversarial
    from genforge.paradigms.config import OracleConfig

    torch.manual_seed(0)
    gen, disc = LstmGenerator(V, 8, 8), CnnDiscriminator(V, L, dropout=0.5)
    seen = []

    def rewards(generator, reward, seqs, start, rollouts, rng=None):
        seen.append((disc.training, torch.equal(reward(seqs), reward(seqs))))
        return rollout_rewards(generator, reward, seqs, start, rollouts, rng)

    monkeypatch.setattr(adversarial, "rollout_rewards", rewards)
    cfg = OracleConfig(out=tmp_path, batch_size=4, rollouts=2, disc_steps=1, adv_epochs=1)
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (gen, disc)]
    adversarial.adversarial_step("seqgan", gen, disc, *opts, sample(gen, 8, L, 0), cfg, 0, 0)
    assert seen == [(False, True)] and disc.training


def test_an_adversarial_resume_with_other_settings_says_so_and_trains_with_them(nets, tmp_path, capsys):
    """The text GANs' adversarial phase resumed with another --gen-lr (or any other setting) without a word,
    and kept training at the learning rate saved in the optimiser's state."""
    import json

    from genforge.paradigms.adversarial import adversarial
    from genforge.paradigms.config import OracleConfig

    generator, disc = nets
    real = torch.randint(0, V, (32, L), generator=torch.Generator().manual_seed(0))
    cfg = OracleConfig(out=tmp_path, adv_epochs=1, eval_every=1, batch_size=4, gen_lr=1e-3)

    def score():
        return {"nll_sum": 1.0}

    adversarial("gumbel", generator, disc, real, cfg, tmp_path / "gumbel", 0, score, "nll_sum")
    capsys.readouterr()
    cfg = OracleConfig(out=tmp_path, adv_epochs=2, eval_every=1, batch_size=4, gen_lr=2e-3, resume=True)
    adversarial("gumbel", generator, disc, real, cfg, tmp_path / "gumbel", 0, score, "nll_sum")
    assert ("resumed at gumbel epoch 1 with other settings: adv_epochs 1 -> 2, gen_lr 0.001 -> 0.002 (kept in "
            "logs/metrics.jsonl)") in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "gumbel" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 1, "kind": "resume", "changed": {"adv_epochs": [1, 2], "gen_lr": [1e-3, 2e-3]}} in records
    state = torch.load(tmp_path / "gumbel" / "checkpoints" / "latest" / "trainer_state.pt", weights_only=True)
    assert [g["lr"] for g in state["g_opt"]["param_groups"]] == [2e-3]
