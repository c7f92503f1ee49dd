import math

import pytest
import torch

from genforge.train.objectives import IGNORE, ClmObjective, MlmObjective, mask_tokens, token_cross_entropy

SPECIALS = torch.tensor([0, 1, 2, 3, 4, 5])


def test_mlm_masking_follows_15_percent_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 1000, (64, 512), generator=g)
    ids[:, ::7] = 2  # EOS between documents: never selected
    ids[:, 5] = 0  # pad
    inputs, labels = mask_tokens(ids, special_ids=SPECIALS, mask_id=3, vocab_size=1000, probability=0.15,
                                 generator=g)
    special = torch.isin(ids, SPECIALS)
    selected = labels != IGNORE
    assert not (selected & special).any(), "a special token was selected"
    assert torch.equal(inputs[special], ids[special]), "a special token was changed"
    assert torch.equal(labels[selected], ids[selected]) and (labels[~selected] == IGNORE).all()
    assert abs(selected.sum().item() / (~special).sum().item() - 0.15) < 0.005
    n = selected.sum().item()
    masked = (inputs == 3) & selected
    changed = (inputs != ids) & selected & ~masked
    kept = (inputs == ids) & selected
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random replacement can draw the original token (1 in 994), so "kept" is a hair above 10%
    assert abs(changed.sum().item() / n - 0.1) < 0.01 and abs(kept.sum().item() / n - 0.1) < 0.01
    assert not torch.isin(inputs[changed], SPECIALS).any(), "random replacements must not be special tokens"
    assert not (inputs[~selected] != ids[~selected]).any(), "unselected tokens must be left alone"


def test_mlm_masks_are_reproducible_and_never_empty():
    ids = torch.arange(6, 14).view(1, 8)
    a = mask_tokens(ids, special_ids=SPECIALS, mask_id=3, vocab_size=20, probability=0.01,
                    generator=torch.Generator().manual_seed(1))
    b = mask_tokens(ids, special_ids=SPECIALS, mask_id=3, vocab_size=20, probability=0.01,
                    generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[1] != IGNORE).sum() >= 1  # 1% of 8 tokens would usually select none: loss would be NaN


def test_clm_batch_predicts_the_next_token():
    windows = torch.arange(10).view(2, 5)
    batch = ClmObjective().make_batch(windows)
    assert torch.equal(batch["input_ids"], torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]]))
    assert torch.equal(batch["labels"], torch.tensor([[1, 2, 3, 4], [6, 7, 8, 9]]))
    assert ClmObjective().window_len(4) == 5 and MlmObjective(mask_id=3, vocab_size=10).window_len(4) == 4


def test_cross_entropy_ignores_unpredicted_positions():
    logits = torch.zeros(1, 3, 4)
    loss, metrics = token_cross_entropy(logits, torch.tensor([[1, IGNORE, 2]]))
    assert math.isclose(loss.item(), math.log(4), rel_tol=1e-6) and metrics["tokens"].item() == 2


def test_mlm_scores_only_selected_positions_with_the_dense_loss_and_gradients():
    from genforge.models.presets import build_model, model_config

    torch.manual_seed(0)
    config = model_config("mlm", "tiny", vocab_size=64, max_positions=16, special_ids={"pad": 0, "mask": 3})
    model = build_model(config, "mlm")
    objective = MlmObjective(mask_id=3, vocab_size=64, special_ids=[0, 1, 2, 3])
    batch = objective.make_batch(torch.randint(6, 64, (4, 16)), torch.Generator().manual_seed(0))
    seen = []
    watch = model.get_output_embeddings().register_forward_hook(lambda _, args, out: seen.append(out.shape))
    sparse, metrics = objective.loss(model, batch)
    watch.remove()
    assert seen == [((batch["labels"] != IGNORE).sum().item(), 64)]  # the projection saw the selected rows
    sparse.backward()
    sparse_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    full = model(input_ids=batch["input_ids"]).logits  # the hook is gone: every position is scored again
    assert full.shape == (4, 16, 64)
    dense, _ = token_cross_entropy(full, batch["labels"])
    dense.backward()
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5)
    assert metrics["tokens"] == (batch["labels"] != IGNORE).sum()
    for a, p in zip(sparse_grads, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
