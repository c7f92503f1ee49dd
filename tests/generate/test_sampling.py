import pytest
import torch

from genforge.errors import ConfigError
from genforge.generate.config import SamplingParams
from genforge.generate.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    draw,
    new_sampler,
    next_tokens,
)


def test_top_k_keeps_exactly_k_per_row():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    out = apply_top_k(logits, torch.tensor([1, 5, 0]))
    kept = torch.isfinite(out).sum(-1).tolist()
    assert kept == [1, 5, 50]
    assert torch.equal(out[1].topk(5).indices.sort().values, logits[1].topk(5).indices.sort().values)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05], [0.97, 0.01, 0.01, 0.01]])
    out = apply_top_p(probs.log(), torch.tensor([[0.79], [0.81], [0.5]]))
    assert torch.isfinite(out).tolist() == [[True, True, False, False], [True, True, True, False],
                                            [True, False, False, False]]
    assert torch.isfinite(apply_top_p(probs.log(), torch.tensor([[1.0]] * 3))).all()


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([[2.0]]))
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_temperature_zero_is_greedy_and_high_temperature_flattens():
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    sampler = new_sampler([SamplingParams(temperature=0, top_p=0.5, top_k=3, seed=i) for i in range(4)],
                          [[1]] * 4, 100)
    assert torch.equal(next_tokens(logits, sampler), logits.argmax(-1))
    flat = apply_temperature(logits, torch.tensor([[10.0]] * 4)).softmax(-1)
    assert flat.max() < logits.softmax(-1).max()


def test_sampled_tokens_stay_inside_top_k_and_follow_the_distribution():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    sampler = new_sampler([SamplingParams(temperature=1.0, top_k=2, top_p=1.0, seed=0)], [[4]], 5)
    counts = torch.bincount(torch.cat([next_tokens(logits, sampler) for _ in range(2000)]), minlength=5)
    assert counts[2:].sum() == 0
    expected = torch.tensor([3.0, 2.0]).softmax(0)[0].item()  # ~0.73
    assert abs(counts[0].item() / 2000 - expected) < 0.05


def test_seeded_rows_are_reproducible_and_independent_of_their_neighbours():
    logits = torch.zeros(3, 1000)  # uniform: every draw is pure randomness

    def run(params):
        sampler = new_sampler(params, [[1]] * len(params), 1000)
        return torch.stack([next_tokens(logits[:len(params)], sampler) for _ in range(20)], 1)

    p = dict(temperature=1.0, top_p=1.0)
    a = run([SamplingParams(seed=7, **p), SamplingParams(seed=8, **p), SamplingParams(seed=7, **p)])
    b = run([SamplingParams(seed=8, **p), SamplingParams(seed=7, **p)])
    assert torch.equal(a[0], a[2]) and torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])


def test_mixed_batch_greedy_and_sampled_rows():
    logits = torch.randn(2, 30, generator=torch.Generator().manual_seed(3))
    sampler = new_sampler([SamplingParams(temperature=0), SamplingParams(temperature=5.0, top_p=1.0, seed=1)],
                          [[1], [1]], 30)
    rows = torch.stack([next_tokens(logits, sampler) for _ in range(50)])
    assert (rows[:, 0] == logits[0].argmax()).all()
    assert len(set(rows[:, 1].tolist())) > 5


def test_penalty_applies_to_prompt_and_generated_tokens():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0]])
    sampler = new_sampler([SamplingParams(temperature=0, repetition_penalty=10.0)], [[0]], 4)
    assert next_tokens(logits, sampler).item() == 1  # token 0 is in the prompt: 5 / 10 < 4
    assert next_tokens(logits, sampler).item() == 2  # token 1 was just generated


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                                 dict(repetition_penalty=0.0), dict(temperature=float("nan"))])
def test_absurd_sampling_values_are_refused(bad):
    with pytest.raises(ConfigError):
        SamplingParams(**bad)


def test_a_tiny_temperature_samples_the_argmax_not_a_nan_draw():
    """1e-39 is a valid temperature (a float32 subnormal): dividing the raw logits by it overflowed the largest
    to +inf, the softmax was NaN and every draw returned the vocabulary's last (here least likely) token."""
    logits = torch.tensor([[3.0, 2.5, -1.0, 5.0, 0.1, -7.0]])
    for top_p in (1.0, 0.9):
        for seed in range(5):
            sampler = new_sampler([SamplingParams(temperature=1e-39, top_p=top_p, seed=seed)], [[1]], 6)
            assert next_tokens(logits, sampler).item() == 3
    assert not apply_temperature(logits, torch.tensor([[1e-39]])).softmax(-1).isnan().any()


def test_draw_resolves_probabilities_below_float32_rounding():
    """A float32 CDF and uniform (24 bits) cannot tell apart intervals narrower than ~6e-8 past half the mass:
    such tokens were never drawn (or drawn as often as a neighbour twice their size). Weights are built so that
    seed 78's uniform falls in the middle of token 2's interval, 2.9e-8 wide: it must be the token drawn."""
    u = torch.rand(1, generator=torch.Generator().manual_seed(78), dtype=torch.float64).item()
    width = 2.9e-8
    before = (u * (0.75 + width) - 0.5 - width / 2) / (1 - u)  # puts 0.5 + before + width / 2 at u * total
    probs = torch.tensor([[0.5, before, width, 0.25]])
    cdf = probs.double().cumsum(-1)[0]
    assert cdf[1] <= u * cdf[-1] < cdf[2]
    assert draw(probs, [torch.Generator().manual_seed(78)]).item() == 2
