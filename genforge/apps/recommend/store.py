"""The build folder's payload on disk and back: items, embeddings, ANN index, behaviour matrices.

Files (all written atomically; manifest.json, stage "app.recommend.build", comes last):
items.jsonl (id, title, text, genres), embeddings.npy (float32, unit rows), index.faiss (inner product),
behaviour.npz (users x items weights, popularity, item-item neighbours, ALS factors; a --holdout build adds
the weights of all the input's interactions, held-out ones included), users.json (all_users.json: the users of
those), recommend.json
(what `load` needs: encoder path (`encoder`, inside the folder, after --tune-encoder), sizes, the fields
used, and `use_scorer`: whether the build's validation found the interest scorer's re-ranking worth its
cost), ranker_fast.txt / ranker.txt (LightGBM),
scorer/ (the interest scorer, a genforge classifier run folder).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from genforge.apps.recommend.behaviour import Behaviour
from genforge.apps.recommend.data import Items
from genforge.artifacts import atomic_open, atomic_write_bytes, read_json, read_manifest, reading, write_json
from genforge.errors import ArtifactError

STAGE = "app.recommend.build"
FLAT_LIMIT = 200_000  # exact search up to this many items (a few ms); HNSW beyond
REBUILD = "build the folder again with `genforge app recommend build`"
INFO_KEYS = ("encoder", "history_items", "rerank", "candidates")  # what `recommender.load` reads of recommend.json


def build_index(embeddings: np.ndarray) -> Any:
    import faiss

    dim = embeddings.shape[1]
    if len(embeddings) <= FLAT_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def genre_matrix(items: Items) -> tuple[sp.csr_matrix, list[str]]:
    genres = sorted({g for gs in items.genres for g in gs})
    index = {g: i for i, g in enumerate(genres)}
    rows = [r for r, gs in enumerate(items.genres) for _ in gs]
    cols = [index[g] for gs in items.genres for g in gs]
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(items.ids), len(genres)))
    return m, genres


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_payload(folder: Path, items: Items, embeddings: np.ndarray, index: Any, behaviour: Behaviour,
                  info: dict[str, Any]) -> None:
    import faiss

    with atomic_open(folder / "items.jsonl") as f:
        for i, item in enumerate(items.ids):
            f.write(json.dumps({"id": item, "title": items.titles[i], "text": items.texts[i],
                                "genres": items.genres[i]}, ensure_ascii=False) + "\n")
    atomic_write_bytes(folder / "embeddings.npy", _npy(embeddings.astype(np.float32)))
    atomic_write_bytes(folder / "index.faiss", faiss.serialize_index(index).tobytes())
    buf = io.BytesIO()
    w, nb, a = behaviour.weights, behaviour.neighbours, behaviour.all_weights
    everything = {} if a is None else {"a_data": a.data, "a_indices": a.indices, "a_indptr": a.indptr,
                                       "a_shape": np.array(a.shape)}
    np.savez(buf, w_data=w.data, w_indices=w.indices, w_indptr=w.indptr, w_shape=np.array(w.shape),
             n_data=nb.data, n_indices=nb.indices, n_indptr=nb.indptr, popularity=behaviour.popularity,
             user_factors=behaviour.user_factors, item_factors=behaviour.item_factors, **everything)
    atomic_write_bytes(folder / "behaviour.npz", buf.getvalue())
    write_json(folder / "users.json", behaviour.users)
    if a is not None:
        write_json(folder / "all_users.json", list(behaviour.all_users))
    write_json(folder / "recommend.json", info)


def read_build(folder: Path) -> tuple[dict, Items, np.ndarray, Behaviour, sp.csr_matrix, list[str]]:
    """The payload of a finished build folder; a missing, damaged or mismatched file is one ArtifactError."""
    folder = Path(folder)
    read_manifest(folder, stage=STAGE)
    info = read_json(folder / "recommend.json", REBUILD, keys=INFO_KEYS)
    with reading(folder / "items.jsonl", REBUILD) as path:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        items = Items([r["id"] for r in rows], [r["title"] for r in rows], [r["text"] for r in rows],
                      [r["genres"] for r in rows])
    with reading(folder / "embeddings.npy", REBUILD) as path:
        embeddings = np.load(path, allow_pickle=False)
    with reading(folder / "behaviour.npz", REBUILD) as path, np.load(path, allow_pickle=False) as z:
        shape = tuple(int(n) for n in z["w_shape"])
        weights = sp.csr_matrix((z["w_data"], z["w_indices"], z["w_indptr"]), shape=shape)
        neighbours = sp.csr_matrix((z["n_data"], z["n_indices"], z["n_indptr"]), shape=(shape[1], shape[1]))
        popularity, user_factors, item_factors = z["popularity"], z["user_factors"], z["item_factors"]
        a_shape = tuple(int(n) for n in z["a_shape"]) if "a_shape" in z.files else None
        all_weights = sp.csr_matrix((z["a_data"], z["a_indices"], z["a_indptr"]), shape=a_shape) if a_shape else None
    users = read_json(folder / "users.json", REBUILD, kind=list)
    all_users = read_json(folder / "all_users.json", REBUILD, kind=list) if a_shape else []
    if not (len(embeddings) == shape[1] == len(popularity) == len(items.ids)) or shape[0] != len(users) or \
            a_shape and a_shape != (len(all_users), shape[1]):
        raise ArtifactError(f"{folder}: items.jsonl, embeddings.npy, behaviour.npz and (all_)users.json do not agree "
                            f"in size (files of different builds?): {REBUILD}")
    behaviour = Behaviour(users, {u: i for i, u in enumerate(users)}, weights, popularity, neighbours,
                          user_factors, item_factors, {u: i for i, u in enumerate(all_users)} if a_shape else None,
                          all_weights)
    gm, genres = genre_matrix(items)
    return info, items, embeddings, behaviour, gm, genres
