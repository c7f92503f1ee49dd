import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, replace

import pytest
import torch

from genforge.models.presets import build_model, model_config
from genforge.train.checkpoint import STATE
from genforge.train.data import WindowBatches, eval_batches, open_tokens, read_pack
from genforge.train.engine import Interrupted, decay_groups, tokens_read, train, weigh_micro_batches
from genforge.train.evaluate import evaluate_loss
from genforge.train.objectives import IGNORE, ClmObjective

SPECIAL = {"pad": 0, "bos": 1, "eos": 2}


def fresh_model(objective="clm", seed=0):
    torch.manual_seed(seed)
    cfg = model_config(objective, "tiny", vocab_size=320, max_positions=32, special_ids=SPECIAL)
    return build_model(cfg, objective)


@dataclass
class SignalAt:
    """The real batches, plus a SIGTERM sent to this process while step `step` is being computed."""

    inner: WindowBatches
    step: int

    def batch(self, step, micro):
        if step == self.step and micro == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner.batch(step, micro)

    def state_dict(self, step):
        return self.inner.state_dict(step)


def setup(packed, tiny, out, **overrides):
    cfg = tiny(out, **overrides)
    pack = read_pack(packed)
    objective = ClmObjective()
    tokens = open_tokens(packed / "train.bin", pack["dtype"], 33)
    val = open_tokens(packed / "val.bin", pack["dtype"], 33)
    batches = WindowBatches(tokens, 33, cfg.batch_size, cfg.grad_accum, cfg.seed, objective.make_batch)
    return cfg, objective, batches, lambda: eval_batches(val, 33, 32, 4, objective.make_batch, max_batches=2)


def test_weight_decay_skips_norms_biases_and_embeddings():
    for objective in ("clm", "mlm"):
        model = fresh_model(objective)
        decay, no_decay = decay_groups(model, 0.1)
        names = {id(p): n for n, p in model.named_parameters()}
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        assert all(p.dim() == 2 and "embed" not in names[id(p)] for p in decay["params"])
        no_decay_names = [names[id(p)] for p in no_decay["params"]]
        assert any("embed" in n for n in no_decay_names) and any("norm" in n.lower() for n in no_decay_names)
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, packed, tiny):
    cfg, objective, batches, val = setup(packed, tiny, tmp_path / "straight", max_steps=8, eval_every=0)
    straight = fresh_model()
    train(straight, objective, batches, cfg, cfg.out, eval_data=val)

    cfg_b = replace(cfg, out=tmp_path / "resumed")
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: other libraries (Ray) install their own
    with pytest.raises(Interrupted, match="SIGTERM at step 4.*--resume"):
        train(fresh_model(), objective, SignalAt(batches, step=3), cfg_b, cfg_b.out, eval_data=val)
    state = torch.load(cfg_b.out / "checkpoints" / "latest" / STATE, weights_only=True)
    assert state["step"] == 4 and state["data"]["next_step"] == 4
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler must be restored"

    resumed = fresh_model(seed=123)  # a different init: everything must come from the checkpoint
    result = train(resumed, objective, batches, replace(cfg_b, resume=True), cfg_b.out, eval_data=val)
    assert result.steps == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), f"{name} differs by {(a - b).abs().max()}"
    rows = [json.loads(line) for line in (cfg_b.out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 9)), "resumed log has gaps/repeats"


def test_checkpoint_state_loads_weights_only(tmp_path, packed, tiny):
    cfg, objective, batches, val = setup(packed, tiny, tmp_path / "run", max_steps=2)
    train(fresh_model(), objective, batches, cfg, cfg.out, eval_data=val)
    state = torch.load(cfg.out / "checkpoints" / "latest" / STATE, weights_only=True)
    assert state["step"] == 2 and isinstance(state["rng"]["torch"], torch.Tensor)
    assert state["optimizer"]["state"] and state["data"]["sequences_seen"] == 2 * cfg.batch_size
    assert (cfg.out / "checkpoints" / "best" / "model.safetensors").is_file()


def test_activation_checkpointing_gives_the_same_training(tmp_path, packed, tiny):
    cfg, objective, batches, val = setup(packed, tiny, tmp_path / "a", max_steps=2, eval_every=0)
    plain, recomputed = fresh_model(), fresh_model()
    train(plain, objective, batches, cfg, cfg.out)
    train(recomputed, objective, batches, replace(cfg, out=tmp_path / "b", activation_checkpointing=True),
          tmp_path / "b")
    for a, b in zip(plain.parameters(), recomputed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


class TwoExamples:
    """Two SFT-like rows as micro-batches: one predicts 20 tokens, the other 2 (a short answer)."""

    def __init__(self, batch_size):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(3, 320, (2, 21), generator=g)
        labels = ids.clone()
        labels[1, :19] = IGNORE
        self.rows, self.batch_size = (ids, labels), batch_size

    def batch(self, step, micro):
        rows = slice(micro * self.batch_size, (micro + 1) * self.batch_size)
        return {"input_ids": self.rows[0][rows, :-1], "labels": self.rows[1][rows, 1:]}

    def state_dict(self, step):
        return {}


def test_a_step_is_the_token_mean_however_the_batch_is_split(tmp_path, packed, tiny):
    """One batch of 2 rows or 2 micro-batches of 1: the same gradient, so the same weights after the step, and
    the logged loss is the evaluation's token mean (each micro-batch weighs its share of the tokens)."""
    weights, losses = [], []
    for batch_size, accum in ((2, 1), (1, 2)):
        model = fresh_model()
        cfg = tiny(tmp_path / f"b{batch_size}", batch_size=batch_size, grad_accum=accum, max_steps=1, warmup_steps=0,
                   eval_every=0, save_every=0)
        result = train(model, ClmObjective(), TwoExamples(batch_size), cfg, tmp_path / f"b{batch_size}")
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        losses.append(result.train_loss)
    start = torch.cat([p.detach().flatten() for p in fresh_model().parameters()])
    assert (weights[0] - start).abs().max() > 1e-4  # the step moved the weights
    assert torch.allclose(weights[0], weights[1], atol=1e-5)  # Adam's first step is ~lr * sign(gradient)
    token_mean = evaluate_loss(fresh_model(), ClmObjective(), [TwoExamples(2).batch(0, 0)], device=torch.device("cpu"))
    assert losses[0] == pytest.approx(token_mean["loss"], rel=1e-5) and losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_micro_batches_weigh_the_same_for_an_objective_without_count():
    batches = [TwoExamples(1).batch(0, m) for m in range(2)]
    assert weigh_micro_batches(ClmObjective(), batches, world=1) == ([20 / 22, 2 / 22], 40)
    assert weigh_micro_batches(object(), batches, world=1) == ([0.5, 0.5], 40)


def test_padding_is_not_counted_as_tokens_read(tmp_path, tiny):
    """Throughput (tok_s, tokens_per_s) counts what the model read: a padded row's padding is no work done."""
    class Padded(TwoExamples):
        def batch(self, step, micro):
            batch = super().batch(step, micro)
            mask = torch.ones_like(batch["input_ids"])
            mask[-1, 5:] = 0  # the last row is 5 tokens and 15 of padding
            return {**batch, "attention_mask": mask}

    assert tokens_read(Padded(2).batch(0, 0)) == 25 and tokens_read(TwoExamples(2).batch(0, 0)) == 40
    cfg = tiny(tmp_path, batch_size=2, grad_accum=1, max_steps=2, warmup_steps=0, eval_every=0, save_every=0)
    assert train(fresh_model(), ClmObjective(), Padded(2), cfg, tmp_path).tokens == 2 * 25


# One step of a padded batch whose rows split unevenly over the processes: rank 0 reads 20 + 2 tokens, rank 1 20 + 9.
PADDED_STEP = """
import json, sys, torch
from genforge.models.presets import build_model, model_config
from genforge.train.config import TrainConfig
from genforge.train.distributed import close, init_distributed
from genforge.train.engine import train
from genforge.train.objectives import ClmObjective

class Padded:
    def batch(self, step, micro):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(3, 320, (4, 20), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 2:] = 0
        mask[3, 9:] = 0
        rows = slice(micro, micro + 1)
        return {"input_ids": ids[rows], "attention_mask": mask[rows],
                "labels": torch.where(mask == 1, ids, -100)[rows]}

    def state_dict(self, step):
        return {}

dist = init_distributed()
torch.manual_seed(0)
model = build_model(model_config("clm", "tiny", vocab_size=320, max_positions=32, special_ids={}), "clm")
cfg = TrainConfig(out=sys.argv[1], max_steps=1, batch_size=1, grad_accum=4, seq_len=20, warmup_steps=0,
                  eval_every=0, save_every=0, log_every=1, bf16=False)
result = train(model, ClmObjective(), Padded(), cfg, cfg.out, dist=dist)
if dist.is_main:  # one line: two ranks printing at once could interleave on the shared stdout
    print(json.dumps({"tokens": result.tokens}), flush=True)
close()
"""


@pytest.mark.slow  # two torchrun processes: about 20 s of interpreter and torch start-up
def test_tokens_read_are_summed_over_processes_of_unequal_padding(tmp_path):
    """Throughput under DDP counts each process's own tokens: rank 0's count times the processes was 44, not 51."""
    script = tmp_path / "padded_step.py"
    script.write_text(PADDED_STEP)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["tokens"] == 20 + 2 + 20 + 9


def test_grad_accum_must_split_over_processes(tmp_path, packed, tiny):
    from genforge.errors import ConfigError
    from genforge.train.distributed import Dist

    cfg, objective, batches, _ = setup(packed, tiny, tmp_path / "x", grad_accum=3)
    with pytest.raises(ConfigError, match="multiple of the 2 processes"):
        train(fresh_model(), objective, batches, cfg, cfg.out, dist=Dist(world=2))


def test_score_selects_the_best_checkpoint_and_drives_patience(tmp_path, packed, tiny):
    cfg, objective, batches, _ = setup(packed, tiny, tmp_path / "run", max_steps=10, eval_every=1, patience=3)
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.45, 0.1])  # higher is better: best at step 2, 3 worse evals follow

    def accuracy():
        return {"accuracy": next(scores)}

    result = train(fresh_model(), objective, batches, cfg, cfg.out, score=accuracy, select="accuracy")
    assert (result.best_step, result.best, result.steps) == (2, {"accuracy": 0.5}, 5)
    assert result.stop_reason == "patience"
    rows = [json.loads(line) for line in (cfg.out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in rows if r["kind"] == "val"] == [0.2, 0.5, 0.4, 0.3, 0.45]

    from genforge.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot select checkpoints by 'macro_f1'"):
        train(fresh_model(), objective, batches, replace(cfg, out=tmp_path / "b"), tmp_path / "b",
              score=lambda: {"accuracy": 1.0}, select="macro_f1")


@dataclass
class NanFrom:
    """The real objective, whose loss turns NaN from its `call`-th training call on (a diverging run)."""

    inner: ClmObjective
    call: int
    calls: int = 0

    def loss(self, model, batch):
        loss, metrics = self.inner.loss(model, batch)
        self.calls += model.training
        return (loss * float("nan") if self.calls >= self.call else loss), metrics


def test_a_diverged_run_stops_at_the_log_step_and_saves_nothing(tmp_path, packed, tiny):
    from genforge.errors import ConfigError

    cfg, objective, batches, val = setup(packed, tiny, tmp_path / "run", max_steps=8, log_every=2, save_every=0,
                                         eval_every=0)
    with pytest.raises(ConfigError, match=r"^training diverged at step 4 \(loss nan, gradient norm nan\); "
                                          r"lower --lr \(now 0.001\) and run again$"):
        train(fresh_model(), NanFrom(objective, call=3), batches, cfg, cfg.out, eval_data=val)
    assert not (cfg.out / "checkpoints" / "latest").exists()
    rows = [json.loads(line) for line in (cfg.out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # the NaN record stays, for `genforge tune` to read


def test_a_run_on_a_clock_aims_its_progress_bar_at_the_step_it_can_reach(tmp_path, packed, tiny, capsys):
    """Not at max_steps (10**9 for "train for N minutes"), which shows 0% and an ETA of centuries."""
    cfg, objective, batches, val = setup(packed, tiny, tmp_path / "run", max_steps=10**9, max_minutes=0.02,
                                         log_every=1, save_every=0, eval_every=0)
    result = train(fresh_model(), objective, batches, cfg, cfg.out, eval_data=val)
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    totals = [int(m[1]) for line in lines if line.startswith("train:") and (m := re.search(r" \d+/(\d+) \[", line))]
    assert result.stop_reason == "max_minutes" and len(totals) >= 2
    assert max(totals) < 10**6 and totals[-1] == result.steps  # ends full


def test_a_resume_with_other_settings_logs_what_the_earlier_steps_used(tmp_path, packed, tiny, capsys):
    """config.yaml ends with the last settings; the log keeps the earlier ones (the same resume keeps none)."""
    cfg, objective, batches, val = setup(packed, tiny, tmp_path / "run", max_steps=6, eval_every=0, lr=1e-3)
    with pytest.raises(Interrupted):
        train(fresh_model(), objective, SignalAt(batches, step=2), cfg, cfg.out, eval_data=val)
    assert torch.load(cfg.out / "checkpoints" / "latest" / STATE, weights_only=True)["settings"]["lr"] == 1e-3
    capsys.readouterr()
    train(fresh_model(), objective, batches, replace(cfg, resume=True, lr=3e-4, max_steps=8), cfg.out, eval_data=val)
    assert "resumed at step 3 with other settings: max_steps 6 -> 8, lr 0.001 -> 0.0003" in capsys.readouterr().err
    rows = [json.loads(line) for line in (cfg.out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["kind"] == "resume"] == [
        {"step": 3, "kind": "resume", "changed": {"max_steps": [6, 8], "lr": [1e-3, 3e-4]}}]
