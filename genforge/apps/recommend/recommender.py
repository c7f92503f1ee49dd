"""A built recommender in memory: candidates, features, the two-stage ranking and explanations.

For one user (known, a few liked items, or a free-text description) it:
1. builds the profile: the weighted mean of the history's item embeddings (or the text's embedding);
2. takes candidates in turn from: the nearest items to the profile in the ANN index, the items that
   co-occur most with the history (item-item cosine), the best by ALS matrix factorisation; never the
   history itself;
3. ranks them with the fast LightGBM ranker over behaviour/embedding features (no language model);
4. re-scores the top `rerank` with the interest scorer (the fine-tuned classifier) and orders them with
   the full ranker: LightGBM boosted from the fast ranker's scores with the interest score as one more feature
   (its output is a correction added to the fast score). Step 4 runs by default only when the build's
   validation users ranked better with it (`use_scorer`): a cross-encoder costs a forward pass per candidate,
   worth paying only for a gain that was measured.
A user known only by a free-text description has no history, the regime neither ranker nor scorer was
trained on (they would bury every item without interactions): their candidates are ranked by the cosine
of item text to the description, so new items compete on their text alone.
Each result carries the history item (or the query's words) that best explains it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.recommend.behaviour import Behaviour
from genforge.apps.recommend.data import Items, norm_id
from genforge.errors import ArtifactError, DataError

FEATURES = ["profile_cos", "max_history_cos", "cooc", "cooc_mean", "mf", "log_popularity", "genre_overlap",
            "log_history"]
FULL_FEATURES = [*FEATURES, "interest"]  # the full ranker boosts from the fast ranker's scores
HISTORY_CAP = 100  # heaviest history items compared one by one with each candidate
WORD = re.compile(r"[a-z0-9]+")


class UnknownGenre(DataError):
    """A genre filter naming a genre no item has (the HTTP route answers 400 on `filters.genres`)."""


@dataclass
class Query:
    """One user's side of the ranking: history (item indices, weights, heaviest first) and/or a text."""

    history: np.ndarray
    weights: np.ndarray
    text: str | None = None
    exclude: set[int] = field(default_factory=set)
    factor: np.ndarray | None = None  # ALS user factor (None: a text-only user)


@dataclass
class Recommender:
    items: Items
    embeddings: np.ndarray  # items x dim, unit rows
    index: Any  # faiss index over the embeddings (inner product)
    behaviour: Behaviour
    genre_matrix: Any  # scipy csr items x genres
    genres: list[str]
    fast_ranker: Any = None  # lightgbm.Booster over FEATURES
    full_ranker: Any = None  # lightgbm.Booster over FULL_FEATURES
    scorer: Any = None  # genforge.apps.recommend.scorer.Scorer
    use_scorer: bool = True  # re-rank with the scorer unless a call says otherwise (the build's validation decides)
    encoder: Any = None  # SentenceEncoder, for text queries (loaded on first use)
    encoder_path: Path | None = None
    history_items: int = 6
    rerank: int = 20
    candidates: int = 50
    item_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_index = self.items.index()

    # ---- queries --------------------------------------------------------------------------------------
    def query_for_user(self, user: str, *, fitted_only: bool = False) -> Query:
        """Ids are read as the build read them (leading zeros dropped), so "017" finds user 17. The history is
        all the user's interactions in the build's input, those a --holdout build kept out of training too, so
        none of them is recommended back; `fitted_only`: only those the build was fitted on, so that evaluation
        ranks the held-out items as unseen."""
        from genforge.apps.recommend.mf import fold_in

        user = norm_id(user)
        b = self.behaviour
        everything = not fitted_only and b.all_weights is not None
        if user not in (b.all_users if everything else b.user_index):
            raise DataError(f"unknown user {user!r}: recommend for a new user with liked items or a text")
        hist, w = b.history(user, everything=everything)
        fitted = b.user_index.get(user)
        if fitted is not None and len(hist) == b.weights[fitted].nnz:
            factor = b.user_factors[fitted]
        else:  # interactions ALS was not fitted on: the factor is folded in from all of them
            factor = fold_in(b.item_factors, hist, w)
        return Query(hist, w, exclude=set(hist.tolist()), factor=factor)

    def query_for_items(self, liked: list[str]) -> Query:
        """Ids are read as the build read them (leading zeros dropped), so "0082" finds item 82."""
        liked = [norm_id(i) for i in liked]
        unknown = [i for i in liked if i not in self.item_index]
        if unknown:
            raise DataError(f"unknown item id(s): {', '.join(unknown[:5])}")
        from genforge.apps.recommend.mf import fold_in

        hist = np.array([self.item_index[i] for i in dict.fromkeys(liked)], dtype=np.int64)
        w = np.ones(len(hist), dtype=np.float32)
        return Query(hist, w, exclude=set(hist.tolist()), factor=fold_in(self.behaviour.item_factors, hist, w))

    def query_for_text(self, text: str) -> Query:
        if not text.strip():
            raise DataError("the interest description is empty")
        return Query(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), text=text.strip())

    def embed_text(self, text: str) -> np.ndarray:
        if self.encoder is None:
            from genforge.adversarial.neighbours import load_encoder

            if self.encoder_path is None or not Path(self.encoder_path).is_dir():
                raise ArtifactError(f"the sentence encoder {self.encoder_path} of this recommender does not exist "
                                    "(moved or deleted?): build it again with `genforge app recommend build`")
            self.encoder = load_encoder(self.encoder_path)
            self.encoder.max_length = 64
        return self.encoder.embed([text])[0].numpy()

    # ---- profile, candidates, features ----------------------------------------------------------------
    def profile(self, q: Query) -> np.ndarray:
        if q.text is not None:
            return self.embed_text(q.text)
        v = (q.weights[:, None] * self.embeddings[q.history]).sum(0)
        return v / max(float(np.linalg.norm(v)), 1e-9)

    def cooc_scores(self, q: Query) -> np.ndarray:
        if not len(q.history):
            return np.zeros(len(self.items.ids), dtype=np.float32)
        return np.asarray(self.behaviour.neighbours[q.history].T @ q.weights).ravel()

    def mf_scores(self, q: Query) -> np.ndarray:
        if q.factor is None:
            return np.zeros(len(self.items.ids), dtype=np.float32)
        return self.behaviour.item_factors @ q.factor

    def signals(self, q: Query) -> dict[str, np.ndarray]:
        """What candidates and features are computed from: profile, co-occurrence and MF scores of all items."""
        return {"profile": self.profile(q), "cooc": self.cooc_scores(q), "mf": self.mf_scores(q)}

    def genre_preference(self, q: Query) -> np.ndarray:
        """The user's share of each genre: history genres weighted like the profile, or genres named in the text."""
        if q.text is not None:
            words = " " + " ".join(WORD.findall(q.text.lower())) + " "
            pref = np.array([f" {g} " in words for g in self.genres], dtype=np.float32)
        else:
            pref = np.asarray(self.genre_matrix[q.history].T @ q.weights).ravel().astype(np.float32)
        total = pref.sum()
        return pref / total if total > 0 else pref

    def candidate_items(self, q: Query, sig: dict[str, np.ndarray], allowed: np.ndarray | None) -> np.ndarray:
        """Up to `candidates` items taken in turn from three lists: nearest to the profile (ANN index), most
        co-occurring with the history, highest MF affinity. The last two hold only what the behaviour says
        something about: items of positive co-occurrence, and no MF list when every affinity is ~0 (a history of
        items nobody else used); otherwise they would pad with arbitrary items in catalogue order."""
        want = self.candidates
        blocked = np.zeros(len(self.items.ids), dtype=bool)
        blocked[list(q.exclude)] = True
        if allowed is not None:
            blocked |= ~allowed
        reach = min(len(self.items.ids), want + len(q.exclude) + (want * 10 if allowed is not None else 0))
        _, nearest = self.index.search(sig["profile"][None, :].astype(np.float32), reach)
        lists = [[int(i) for i in nearest[0] if i >= 0 and not blocked[i]]]
        for key in ("cooc", "mf"):
            if key == "cooc" and not len(q.history) or key == "mf" and not np.abs(sig["mf"]).max() > 1e-6:
                continue
            scores = np.where(blocked | (key == "cooc") & (sig[key] <= 0), -np.inf, sig[key])
            top = np.argpartition(-scores, min(want, len(scores) - 1))[:want]
            lists.append([int(i) for i in top[np.argsort(-scores[top], kind="stable")] if np.isfinite(scores[i])])
        chosen: dict[int, None] = {}
        for rank in range(max(map(len, lists))):
            for ranked in lists:
                if rank < len(ranked) and len(chosen) < want:
                    chosen.setdefault(ranked[rank])
        return np.fromiter(chosen, dtype=np.int64, count=len(chosen))

    def features(self, q: Query, sig: dict[str, np.ndarray], cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features [len(cands), FEATURES], index into the history of each candidate's closest item, -1 if none)."""
        e = self.embeddings[cands]
        profile_cos = e @ sig["profile"]
        cooc = sig["cooc"]
        if len(q.history):
            sims = e @ self.embeddings[q.history[:HISTORY_CAP]].T
            closest = sims.argmax(1)
            max_hist = sims.max(1)
        else:
            closest, max_hist = np.full(len(cands), -1), profile_cos
        n = max(len(q.history), 1)
        genre = np.asarray(self.genre_matrix[cands] @ self.genre_preference(q)).ravel()
        n_genres = np.maximum(np.asarray(self.genre_matrix[cands].sum(1)).ravel(), 1)
        x = np.column_stack([profile_cos, max_hist, cooc[cands], cooc[cands] / n, sig["mf"][cands],
                             np.log1p(self.behaviour.popularity[cands]), genre / n_genres,
                             np.full(len(cands), np.log1p(len(q.history)))]).astype(np.float32)
        return x, closest

    def history_text(self, q: Query) -> str:
        if q.text is not None:
            return q.text
        from genforge.apps.recommend.scorer import history_text

        return history_text(self.items, q.history.tolist(), self.history_items)

    # ---- ranking --------------------------------------------------------------------------------------
    def rank(self, q: Query, k: int, *, use_scorer: bool | None = None,
             allowed: np.ndarray | None = None) -> dict[str, Any]:
        """Ranked candidates: {"fast": item indices by the fast ranker, "final": by the full pipeline,
        "scores", "closest", "interest" (dict item -> P), "candidates"}. `use_scorer` None: `self.use_scorer`."""
        use_scorer = self.use_scorer if use_scorer is None else use_scorer
        sig = self.signals(q)
        cands = self.candidate_items(q, sig, allowed)
        if not len(cands):
            return {"fast": [], "final": [], "scores": {}, "closest": {}, "interest": {}, "candidates": cands}
        x, closest = self.features(q, sig, cands)
        described = q.text is not None  # the rankers learnt from histories; a description ranks by meaning
        fast = x[:, 0] if described or self.fast_ranker is None else self.fast_ranker.predict(x)
        order = np.argsort(-fast, kind="stable")
        scores = {int(cands[i]): float(fast[i]) for i in order}
        final = [int(cands[i]) for i in order]
        interest = {}
        if use_scorer and not described and self.scorer is not None and self.full_ranker is not None:
            top = order[:max(self.rerank, k)]
            from genforge.apps.recommend.scorer import pair_texts

            probs = self.scorer.score(pair_texts(self.items, self.history_text(q), cands[top].tolist(),
                                                 self.scorer.sep))
            full = fast[top] + self.full_ranker.predict(np.column_stack([x[top], probs]))
            re = top[np.argsort(-full, kind="stable")]
            interest = {int(cands[i]): float(pr) for i, pr in zip(top, probs, strict=True)}
            scores.update({int(cands[i]): float(s) for i, s in zip(top, full, strict=True)})
            final = [int(cands[i]) for i in re] + [int(cands[i]) for i in order[len(top):]]
        return {"fast": [int(cands[i]) for i in order[:k]], "final": final[:k], "scores": scores,
                "closest": {int(c): int(j) for c, j in zip(cands, closest, strict=True)}, "interest": interest,
                "candidates": cands}

    def explain(self, q: Query, item: int, closest: int) -> str:
        shared = [g for g in self.items.genres[item] if g in {g for h in q.history[:HISTORY_CAP]
                                                               for g in self.items.genres[h]}] if len(q.history) else []
        if q.text is not None:
            words = set(WORD.findall(q.text.lower()))
            hits = [w for w in dict.fromkeys(WORD.findall(self.items.texts[item].lower())) if w in words and len(w) > 2]
            return f"matches your words: {', '.join(hits[:4])}" if hits else "close in meaning to your description"
        because = f"because you liked {self.items.titles[q.history[closest]]}" if closest >= 0 else "popular pick"
        return because + (f"; shared genres: {', '.join(shared[:3])}" if shared else "")

    def recommend(self, q: Query, k: int = 10, *, use_scorer: bool | None = None, genres: list[str] = (),
                  exclude: list[str] = ()) -> list[dict[str, Any]]:
        """Top-k as {"item", "title", "score", "interest", "explanation"} rows."""
        allowed = None
        if genres:
            wanted = {g.strip().lower() for g in genres}
            unknown = sorted(wanted - set(self.genres))
            if unknown:  # a misspelt genre would filter every item out: an empty answer, no word why
                raise UnknownGenre(f"no item has the genre(s) {', '.join(map(repr, unknown))} (genres: "
                                f"{', '.join(self.genres[:30])}{', ...' if len(self.genres) > 30 else ''})")
            allowed = np.array([bool(wanted & set(g)) for g in self.items.genres])
        q.exclude |= {self.item_index[i] for i in map(norm_id, exclude) if i in self.item_index}
        ranked = self.rank(q, k, use_scorer=use_scorer, allowed=allowed)
        return [{"item": self.items.ids[i], "title": self.items.titles[i], "score": round(ranked["scores"][i], 5),
                 "interest": round(ranked["interest"][i], 5) if i in ranked["interest"] else None,
                 "explanation": self.explain(q, i, ranked["closest"][i])} for i in ranked["final"]]


def load(folder: Path, *, scorer: bool | None = None) -> Recommender:
    """A build folder (manifest stage "app.recommend.build") as a Recommender. `scorer`: True loads the interest
    scorer and re-ranks with it, False does neither, None follows the build's validation (`use_scorer`)."""
    import faiss

    from genforge.apps.recommend.store import REBUILD, read_build
    from genforge.artifacts import reading

    folder = Path(folder)
    info, items, embeddings, behaviour, genre_matrix, genres = read_build(folder)
    with reading(folder / "index.faiss", REBUILD, also=(RuntimeError,)) as path:
        index = faiss.read_index(str(path))
        if index.ntotal != len(items.ids):
            raise ValueError(f"it holds {index.ntotal} vectors for {len(items.ids)} items")
    model = Recommender(items, embeddings, index, behaviour, genre_matrix, genres,
                        encoder_path=folder / info["encoder"], history_items=info["history_items"],
                        rerank=info["rerank"], candidates=info["candidates"],
                        use_scorer=info.get("use_scorer", True) if scorer is None else scorer)
    model.fast_ranker = load_ranker(folder / "ranker_fast.txt", info.get("sha256", {}))
    if model.use_scorer and (folder / "scorer").is_dir() and (folder / "ranker.txt").is_file():
        from genforge.apps.recommend.scorer import Scorer

        model.scorer = Scorer(folder / "scorer")
        model.full_ranker = load_ranker(folder / "ranker.txt", info.get("sha256", {}))
    return model


def load_ranker(path: Path, digests: dict[str, str]) -> Any:
    """A LightGBM ranker file, first checked against the sha256 the build recorded: on a truncated or edited
    model file LightGBM's parser aborts the whole process, no exception, or loads the trees before the cut.
    Builds that recorded no sha256 (older ones) are checked for the line that closes the trees."""
    import lightgbm as lgb

    from genforge.apps.recommend.store import REBUILD
    from genforge.artifacts import reading, sha256_file

    with reading(path, REBUILD, also=(lgb.basic.LightGBMError,)):
        if path.name in digests:
            if sha256_file(path) != digests[path.name]:
                raise ValueError("its sha256 is not the one the build recorded")
        elif b"\nend of trees" not in path.read_bytes():
            raise ValueError("it is cut short (no 'end of trees' line)")
        return lgb.Booster(model_file=str(path))
