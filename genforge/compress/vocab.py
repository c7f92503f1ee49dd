"""`--trim-vocab`: keep only the part of a WordPiece vocabulary a task uses (smaller embedding table).

In a small encoder the embedding table is most of the model (MiniLM: 11.7 M of 22.7 M parameters for
30,522 tokens). A sentiment task on financial news uses a few thousand of those tokens. We keep every
token the training texts produce, every single character (alone and as a `##` continuation, so any
word can still be spelled out) and the special tokens, and renumber them in their old order.

WordPiece segments a word greedily, longest known prefix first. Removing tokens never makes a longer
match possible and every piece the training texts used is kept, so those texts tokenise exactly as
before; an unseen word may fall back to shorter pieces. Byte-level BPE is refused: its merges depend
on each other, so a subset of its vocabulary is not a tokenizer.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genforge.compress.subject import Subject
from genforge.errors import ConfigError


def kept_ids(tokenizer: Any, vocab: dict[str, int], texts: list[str]) -> list[int]:
    used = set(tokenizer.all_special_ids)
    for first in range(0, len(texts), 512):
        for row in tokenizer(texts[first:first + 512], truncation=False)["input_ids"]:
            used.update(row)
    used.update(i for token, i in vocab.items() if len(token) == 1 or (token.startswith("##") and len(token) == 3))
    return sorted(used)


def _remap(node: Any, new_of: dict[int, int]) -> Any:
    """The post-processor's special-token `ids` lists renumbered (they sit a few levels deep)."""
    if isinstance(node, dict):
        return {k: ([new_of[i] for i in v] if k == "ids" and isinstance(v, list) else _remap(v, new_of))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_remap(v, new_of) for v in node]
    return node


def trimmed_tokenizer(tokenizer: Any, old_ids: list[int], folder: Path) -> Any:
    """The tokenizer with only `old_ids`, renumbered 0..n-1 in order, saved in `folder` and reloaded."""
    from transformers import AutoTokenizer

    new_of = {old: new for new, old in enumerate(old_ids)}
    tokenizer.save_pretrained(folder)
    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    state["model"]["vocab"] = {t: new_of[i] for t, i in state["model"]["vocab"].items() if i in new_of}
    for token in state.get("added_tokens") or []:
        token["id"] = new_of[token["id"]]
    state["post_processor"] = _remap(state.get("post_processor"), new_of)
    if state.get("padding"):
        state["padding"]["pad_id"] = new_of[state["padding"]["pad_id"]]
    (folder / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        config["added_tokens_decoder"] = {str(new_of[int(i)]): v for i, v in config["added_tokens_decoder"].items()}
    config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    vocab_txt = folder / "vocab.txt"
    if vocab_txt.is_file():
        inverse = {i: t for t, i in state["model"]["vocab"].items()}
        vocab_txt.write_text("".join(inverse[i] + "\n" for i in range(len(old_ids))), encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


@torch.no_grad()
def trim_vocab(subject: Subject, texts: list[str]) -> tuple[Subject, torch.Tensor]:
    """(the subject with a trimmed vocabulary, new id -> old id table). Changes the model in place."""
    tokenizer = subject.tokenizer
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = state["model"]["type"]
    if kind != "WordPiece":
        raise ConfigError(f"--trim-vocab works on WordPiece (BERT-style) vocabularies; this tokenizer is {kind}")
    old_ids = kept_ids(tokenizer, state["model"]["vocab"], texts)
    with tempfile.TemporaryDirectory(prefix="genforge-vocab-") as tmp:
        new_tokenizer = trimmed_tokenizer(tokenizer, old_ids, Path(tmp))
    body = subject.transformer
    old = body.get_input_embeddings()
    index = torch.tensor(old_ids)
    pad = body.config.pad_token_id
    new_pad = old_ids.index(pad) if pad in old_ids else None
    embedding = nn.Embedding(len(old_ids), old.embedding_dim, padding_idx=new_pad)
    embedding.weight.copy_(old.weight[index])
    body.set_input_embeddings(embedding)
    body.config.vocab_size = len(old_ids)
    body.config.pad_token_id = new_pad
    if new_tokenizer.pad_token_id is None and tokenizer.pad_token is not None:
        new_tokenizer.pad_token = tokenizer.pad_token
    return Subject(subject.kind, subject.model, new_tokenizer, subject.info), index
