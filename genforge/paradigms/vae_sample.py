"""`genforge vae sample`: sentences from the prior p(z) = N(0, I), or decoded along a line in latent space.

Interpolation encodes two sentences to their posterior means and decodes evenly spaced points between
them: with a latent space in use (active units > 0) the sentences change gradually, which is the
VAE's promise over a plain LM.
"""

from __future__ import annotations

import numpy as np
import torch

from genforge.errors import ConfigError
from genforge.paradigms.config import VaeSampleConfig
from genforge.paradigms.vae import TextVae, collate, load_vae


@torch.no_grad()
def decode(model: TextVae, z: torch.Tensor, special: dict[str, int], max_len: int, temperature: float = 0.0,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """Token ids decoded from each row of z, greedy (temperature 0) or sampled, up to EOS or `max_len`."""
    inputs = torch.full((len(z), 1), special["bos"], dtype=torch.long)
    state, out = None, []
    for _ in range(max_len + 1):
        logits, state = model.decode(z, inputs, state)
        last = logits[:, -1].float()
        if temperature:
            # shifted to a top logit of 0 first: a tiny temperature then sends the others to -inf, not the top to inf
            shifted = last - last.amax(-1, keepdim=True)
            token = torch.multinomial(torch.softmax(shifted / temperature, -1), 1, generator=generator)
        else:
            token = last.argmax(-1, keepdim=True)
        out.append(token)
        inputs = token
    rows = torch.cat(out, dim=1).tolist()
    return [r[:r.index(special["eos"])] if special["eos"] in r else r for r in rows]


def print_sentences(result: dict[str, list[str]]) -> None:
    """Print each kind under a `# kind` header, one sentence a line: a decoded document can hold line
    breaks (a play's turns, a letter), which would otherwise split one sentence over several lines and
    make `--n 5` look like any number of them."""
    for kind, sentences in result.items():
        print(f"# {kind}")
        for s in sentences:
            print(" ".join(s.splitlines()))


def vae_sample(cfg: VaeSampleConfig) -> dict[str, list[str]]:
    """Print and return {"prior": [...], "interpolation": [...]} sentences."""
    model, tokenizer, info = load_vae(cfg.model)
    special, max_len = info["special_ids"], info["max_len"]
    g = torch.Generator().manual_seed(cfg.seed)
    z = torch.randn(cfg.n, info["latent_size"], generator=g)
    result = {"prior": [tokenizer.decode(r) for r in decode(model, z, special, max_len, cfg.temperature, g)]}
    if cfg.interpolate:
        ids = [np.asarray(tokenizer.encode(s, add_special_tokens=False)[:max_len], dtype=np.int64)
               for s in cfg.interpolate]
        if any(len(s) == 0 for s in ids):
            raise ConfigError("--interpolate sentences must not be empty")
        batch = collate(ids, special["bos"], special["eos"], special["pad"])
        mu, _ = model.encode(batch["input_ids"], batch["lengths"])
        weights = torch.linspace(0, 1, cfg.steps)[:, None]
        line = (1 - weights) * mu[0] + weights * mu[1]
        result["interpolation"] = [tokenizer.decode(r) for r in decode(model, line, special, max_len,
                                                                       cfg.temperature, g)]
    print_sentences(result)
    return result
