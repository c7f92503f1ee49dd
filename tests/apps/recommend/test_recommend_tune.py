import json

import numpy as np
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

    aligned, _ = objective.loss(identity, {"input_ids": torch.cat([eye, eye]), "attention_mask": None})
    shuffled, _ = objective.loss(identity, {"input_ids": torch.cat([eye, eye[[1, 0, 3, 2]]]), "attention_mask": None})
    assert aligned < 0.01 < shuffled


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
