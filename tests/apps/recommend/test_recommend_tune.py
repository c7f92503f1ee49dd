import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from genforge.apps.recommend.build import build
from genforge.apps.recommend.config import BuildConfig
from genforge.apps.recommend.recommender import load
from genforge.apps.recommend.tune import ContrastiveObjective, co_interacted_pairs

from .test_recommend_build import write_data


def test_pairs_are_strongest_neighbours_without_mirrors():
    neighbours = sp.csr_matrix(np.array([[0, 0.9, 0.1, 0.5], [0.9, 0, 0.2, 0], [0.1, 0.2, 0, 0], [0.5, 0, 0, 0]]))
    pairs = co_interacted_pairs(neighbours, per_item=2, seed=0)
    assert set(pairs) == {(0, 1), (0, 3), (1, 2), (2, 0)}  # (1, 0), (2, 1) and (3, 0) are mirrors
    assert len(pairs) == len(set(pairs))


def test_contrastive_loss_prefers_matching_pairs():
    objective = ContrastiveObjective()
    eye = torch.eye(4)

    def identity(ids, mask):
        return ids.float()

    items = torch.arange(8)
    aligned, _ = objective.loss(identity, {"input_ids": torch.cat([eye, eye]), "attention_mask": None, "items": items})
    shuffled, _ = objective.loss(identity, {"input_ids": torch.cat([eye, eye[[1, 0, 3, 2]]]), "attention_mask": None,
                                            "items": items})
    assert aligned < 0.01 < shuffled


def test_pairs_sharing_an_item_are_not_each_others_negatives():
    """An item is the anchor of up to 3 pairs and the neighbour in others: in one batch, the same item (or an
    anchor's other neighbour) must not be taught as unrelated to it."""
    # pairs (0, 5), (1, 5), (0, 1), (2, 7): 5 is two pairs' positive, 0 two pairs' anchor, 1 an anchor and a
    # positive; (2, 7) shares nothing
    items = torch.tensor([0, 1, 0, 2, 5, 5, 1, 7])

    def loss(vectors):  # an "encoder" embedding item i as vectors[i]
        return ContrastiveObjective().loss(lambda ids, mask: ids, {"input_ids": vectors[items], "attention_mask": None,
                                                                   "items": items})[0]

    eye = torch.eye(2)
    taste = eye[[0, 0, 1, 0, 0, 0, 0, 1]]  # {0, 1, 5} and {2, 7} embed as two points: what co-interaction says
    assert loss(taste) < 0.01  # nothing left to learn
    # all alike: the three sharing pairs each still have (2, 7) as a negative, and (2, 7) has all three
    assert float(loss(eye[[0] * 8])) == pytest.approx((3 * math.log(2) + math.log(4)) / 4, abs=1e-4)


def test_build_with_a_tuned_encoder_keeps_it_in_the_folder(tmp_path):
    write_data(tmp_path)
    out = tmp_path / "model"
    build(BuildConfig(items=tmp_path / "items.csv", interactions=[tmp_path / "events.csv"], out=out,
                      text_fields=["title", "plot"], genre_field="genre", rating_field="rating", scorer=False,
                      tune_encoder=True, tune_steps=3, tune_batch_size=8, ranker_users=60, candidates=12,
                      neighbours=10))
    assert (out / "encoder" / "config.json").is_file() and not (out / "encoder_run").exists()
    assert json.loads((out / "recommend.json").read_text())["encoder"] == "encoder"
    assert json.loads((out / "manifest.json").read_text())["metrics"]["tune_seconds"] >= 0
    moved = tmp_path / "moved"
    out.rename(moved)  # the folder carries its encoder: text queries still work after a move
    model = load(moved)
    rows = model.recommend(model.query_for_text("space opera about senate politics"), 3)
    assert "c1" in [r["item"] for r in rows]
