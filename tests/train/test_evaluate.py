import json
import math
from types import SimpleNamespace

import pytest
import torch

from genforge.train.data import eval_batches, open_tokens, read_pack
from genforge.train.evaluate import bits_per_byte, evaluate_loss
from genforge.train.objectives import ClmObjective


def test_bits_per_byte_by_hand():
    # 1000 tokens at NLL ln(4) nats each = 2 bits each = 2000 bits, over 500 bytes -> 4 bits per byte
    assert bits_per_byte(math.log(4), tokens=1000, n_bytes=500) == pytest.approx(4.0)
    # one bit per token, 4 bytes per token -> a quarter bit per byte
    assert bits_per_byte(math.log(2), tokens=10, n_bytes=40) == pytest.approx(0.25)


class Uniform(torch.nn.Module):
    """Predicts every token with probability 1/vocab: its NLL is exactly ln(vocab)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab, device=input_ids.device))


def test_evaluation_covers_the_split_and_weights_by_tokens(packed):
    pack = read_pack(packed)
    tokens = open_tokens(packed / "val.bin", pack["dtype"], 33)
    objective = ClmObjective()
    batches = list(eval_batches(tokens, 33, 32, 5, objective.make_batch))
    predicted = sum(b["labels"].numel() for b in batches)
    assert len(tokens) - 32 <= predicted < len(tokens)  # every token but the first (and a ragged tail)
    starts = torch.cat([b["input_ids"][:, 0] for b in batches])
    assert torch.equal(starts, torch.from_numpy(tokens[0:len(tokens) - 32:32].astype("int64")))
    result = evaluate_loss(Uniform(pack["vocab_size"]), objective, batches, device=torch.device("cpu"))
    assert result["loss"] == pytest.approx(math.log(pack["vocab_size"]))
    assert result["tokens"] == predicted
    sampled = list(eval_batches(tokens, 33, 32, 2, objective.make_batch, max_batches=3))
    assert len(sampled) == 3 and sampled[-1]["input_ids"][-1, 0] == tokens[(len(tokens) - 33) // 32 * 32]


def test_eval_command_prints_json(tmp_path, packed, tiny, capsys):
    from genforge.train.config import EvalConfig
    from genforge.train.evaluate import evaluate
    from genforge.train.pretrain import pretrain

    run = pretrain(tiny(tmp_path / "run", max_steps=2))
    capsys.readouterr()
    result = evaluate(EvalConfig(model=run, data=packed, seq_len=32, batch_size=8))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) == {"loss", "perplexity", "bits_per_byte"}
    pack = read_pack(packed)
    assert printed["bits_per_byte"] == pytest.approx(
        bits_per_byte(result["loss"], pack["val_tokens"], pack["val_bytes"]), abs=1e-5)
    assert printed["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-5)


def test_ranks_together_score_what_one_process_scores(packed):
    """Sharded evaluation: the token-weighted sums of 3 ranks (one with a padding batch, no targets, whose
    mean loss is NaN) add up to the single-process score; the padding must count for nothing."""
    pack = read_pack(packed)
    tokens = open_tokens(packed / "val.bin", pack["dtype"], 33)
    objective, model, cpu = ClmObjective(), Uniform(pack["vocab_size"]), torch.device("cpu")
    alone = evaluate_loss(model, objective, eval_batches(tokens, 33, 32, 5, objective.make_batch), device=cpu)
    n_batches = len(list(eval_batches(tokens, 33, 32, 5, objective.make_batch)))
    world = 3 if n_batches % 3 else 2 if n_batches % 2 else 4  # a world that leaves a rank short of a batch
    assert n_batches % world
    ranks = [evaluate_loss(model, objective, eval_batches(tokens, 33, 32, 5, objective.make_batch, rank=r,
                                                          world=world), device=cpu) for r in range(world)]
    assert sum(r["tokens"] for r in ranks) == alone["tokens"]
    nll = sum(r["loss"] * r["tokens"] for r in ranks if r["tokens"])
    assert nll / alone["tokens"] == pytest.approx(alone["loss"])
    assert not any(math.isnan(r["loss"]) for r in ranks)


class HostCounted:
    """An objective counting its examples on the host, as a user's may: `torch.tensor(n)` is a CPU tensor."""

    def loss(self, model, batch):
        return model(batch["input_ids"]).logits.mean(), {"tokens": torch.tensor(batch["input_ids"].shape[0])}


def test_a_count_made_on_the_host_joins_the_loss_on_the_device():
    """Meta tensors stand in for a GPU's: stacking one with a CPU tensor raises, as CUDA and CPU do. They cannot
    be read back either, so a run whose every batch was summed fails only at the final read of the totals."""
    batches = [{"input_ids": torch.zeros(2, 4, dtype=torch.long)}] * 2
    with pytest.raises(RuntimeError, match="Cannot copy out of meta tensor"):
        evaluate_loss(Uniform(8), HostCounted(), batches, device=torch.device("meta"))


def test_eval_refuses_data_of_another_tokenizer_of_the_same_size(tmp_path, packed, tiny, repack):
    """Data packed by another tokenizer with as many tokens passes the vocabulary size check, yet would score
    as nonsense; a model folder without a tokenizer has nothing to compare and is scored as before."""
    import shutil

    from typer.testing import CliRunner

    from genforge.cli import app
    from genforge.train.pretrain import pretrain

    run = pretrain(tiny(tmp_path / "run", max_steps=1))
    result = CliRunner().invoke(app, ["eval", "--model", str(run), "--data", str(repack(packed)), "--seq-len", "32"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: model {run} has a different tokenizer"), result.output
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(run / name, bare / name)
    result = CliRunner().invoke(app, ["eval", "--model", str(bare), "--data", str(packed), "--seq-len", "32"])
    assert result.exit_code == 0, result.output
