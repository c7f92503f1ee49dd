"""The synthetic-oracle benchmark of SeqGAN/Texygen: a known LSTM plays "the true distribution of text".

Because the oracle's likelihood is known, quality and diversity are measurable exactly: NLL-oracle
is the oracle's NLL of generated samples (lower = more like the oracle's text; the oracle's own
samples score ~5.75 with the published parameters), NLL-test is the generator's NLL of held-out
oracle samples (lower = covers more of the oracle's distribution; mode collapse raises it). The
published oracle (LantaoYu/SeqGAN, converted to npz) is used when its folder is given; otherwise a
seeded oracle initialised N(0, 1) as in the original code.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from genforge.errors import DataError
from genforge.paradigms.sequence import LstmGenerator

VOCAB, LENGTH, SIZE, START = 5000, 20, 32, 0  # SeqGAN's oracle: vocabulary, length, embedding/hidden, start id
GATES = (("Wi", "Ui", "bi"), ("Wf", "Uf", "bf"), ("Wc", "Uc", "bc"), ("Wog", "Uog", "bog"))  # torch's order i f g o


def load_oracle(folder: Path) -> LstmGenerator:
    """The published oracle from `folder/oracle_params.npz`, as an `LstmGenerator` computing the same function.

    SeqGAN's cell is the standard LSTM with row-vector inputs (x·W + h·U + b), so torch's weight
    matrices are the transposes, stacked in torch's gate order; torch's second bias stays zero.
    """
    path = Path(folder) / "oracle_params.npz"
    if not path.is_file():
        raise DataError(f"{path} not found: point --oracle at the seqgan_oracle folder, or leave it out for "
                        "a seeded random oracle")
    arrays = read_oracle_arrays(path)
    vocab, embed = arrays["g_embeddings"].shape
    hidden = arrays["Wo"].shape[0]
    oracle = LstmGenerator(vocab, embed, hidden)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with torch.no_grad():
        oracle.embed.weight.copy_(t["g_embeddings"])
        oracle.lstm.weight_ih_l0.copy_(torch.cat([t[w].T for w, _, _ in GATES]))
        oracle.lstm.weight_hh_l0.copy_(torch.cat([t[u].T for _, u, _ in GATES]))
        oracle.lstm.bias_ih_l0.copy_(torch.cat([t[b] for _, _, b in GATES]))
        oracle.lstm.bias_hh_l0.zero_()
        oracle.head.weight.copy_(t["Wo"].T)
        oracle.head.bias.copy_(t["bo"])
    return oracle.requires_grad_(False).eval()


def read_oracle_arrays(path: Path) -> dict[str, np.ndarray]:
    """SeqGAN's oracle arrays from an .npz as float32, checked to be readable and of consistent shapes."""
    needed = {"g_embeddings", "Wo", "bo", *(name for gate in GATES for name in gate)}
    try:
        with np.load(path) as p:  # no pickles: a parameter file holds plain arrays
            if missing := sorted(needed - set(p.files)):
                raise DataError(f"{path} lacks array '{missing[0]}': expected SeqGAN's oracle parameters")
            arrays = {k: np.asarray(p[k], dtype=np.float32) for k in needed}
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path} is not a readable .npz of numeric arrays ({str(e).splitlines()[0]}): "
                        "use the seqgan_oracle folder's oracle_params.npz") from None
    if arrays["g_embeddings"].ndim != 2 or arrays["Wo"].ndim != 2:
        raise DataError(f"{path}: g_embeddings and Wo must be matrices; got shapes "
                        f"{arrays['g_embeddings'].shape} and {arrays['Wo'].shape}")
    (vocab, embed), hidden = arrays["g_embeddings"].shape, arrays["Wo"].shape[0]
    shapes = {"Wo": (hidden, vocab), "bo": (vocab,)}
    for w, u, b in GATES:
        shapes.update({w: (embed, hidden), u: (hidden, hidden), b: (hidden,)})
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise DataError(f"{path}: array '{name}' has shape {arrays[name].shape}, expected {shape} "
                            f"(vocabulary {vocab}, embedding {embed}, hidden {hidden})")
    return arrays


def random_oracle(seed: int, vocab: int = VOCAB, size: int = SIZE) -> LstmGenerator:
    """SeqGAN's recipe for an oracle without the published file: every parameter drawn from N(0, 1)."""
    torch.manual_seed(seed)
    oracle = LstmGenerator(vocab, size, size)
    with torch.no_grad():
        for p in oracle.parameters():
            p.normal_(0.0, 1.0)
    return oracle.requires_grad_(False).eval()


def read_samples(path: Path, vocab: int, length: int) -> torch.Tensor:
    """Token rows of SeqGAN's real_data.txt (space-separated ids, one sequence a line)."""
    try:
        # (line number in the file, ids): blank lines are skipped but still counted, so errors point at the line
        rows = [(n, [int(x) for x in line.split()]) for n, line in enumerate(Path(path).read_text().splitlines(), 1)
                if line.strip()]
    except ValueError as e:
        raise DataError(f"{path}: not a file of space-separated token ids ({e})") from None
    if not rows:
        raise DataError(f"{path} holds no sequences: expected one line of {length} space-separated ids per "
                        "sequence (or remove the file to sample the training rows from the oracle)")
    bad = next((n for n, r in rows if len(r) != length or not all(0 <= x < vocab for x in r)), None)
    if bad is not None:
        raise DataError(f"{path} line {bad}: expected {length} ids in [0, {vocab})")
    return torch.tensor([r for _, r in rows], dtype=torch.long)
