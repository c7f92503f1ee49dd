"""`genforge finetune dpo`: preference pairs + a chat model -> a chat model that prefers the chosen answers.

Direct Preference Optimization (Rafailov et al. 2023): for a prompt x with a chosen answer y_w and a
rejected one y_l, the loss is -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) -
log ref(y_l|x))]), where pi is the model being trained and ref the frozen starting model. No reward model
and no sampling: the pairs are what `genforge feedback export` writes to preference.jsonl (a correction
against the answer it corrects; answers to the same messages rated up and down), so users' ratings in
the serving database train the next model.

The reference is frozen, so its log-probabilities are computed once, before training, and travel in the
batches; only the trained model is in memory during the run. Pairs are rendered like SFT
(`genforge.finetune.sft`, the chat template segment by segment), but only the final answer's tokens and its
closing <|im_end|> are scored: the prompt's earlier assistant turns (a served chat, as `feedback export`
writes it) are context, not what was rated. The prompt is truncated once per pair, so both answers follow
identical tokens and their difference is all the margin measures. The loop, checkpoints and LoRA are the
engine's and fine-tuning's; the validation loss is the DPO loss of held-out pairs, and the summary adds
how often the model ranks the chosen answer above the rejected one by more than the reference does (reward
accuracy). Dropout is off while DPO trains, as in TRL (`disable_dropout`, its default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from genforge.errors import DataError
from genforge.finetune.batches import ShuffledBatches, fit_batch_size, in_order, pad, steps_for
from genforge.finetune.config import DpoConfig
from genforge.finetune.data import hash_split, read_records
from genforge.finetune.model import load_weights, trainable_params
from genforge.finetune.run import best_checkpoint, check_run_folder, device, prepare_output, run_inputs
from genforge.finetune.sft import (
    Message,
    chat_tokenizer,
    export,
    load_causal_lm,
    parse_dialogue,
    record_chat_run,
    segments,
    trainable_lm,
)
from genforge.train.distributed import Dist
from genforge.train.engine import train
from genforge.train.evaluate import evaluate_loss, to_device
from genforge.train.logs import plot_loss
from genforge.train.objectives import IGNORE

Pair = tuple[list[Message], str, str]  # (prompt messages, chosen answer, rejected answer)
Encoded = tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]  # (chosen, rejected) ids + labels


def read_pairs(path: Path) -> list[Pair]:
    """Preference pairs of a JSONL/JSON/CSV file: `prompt` (a list of chat messages, or a string = one user
    message), `chosen` and `rejected` (answer texts that differ)."""
    pairs = []
    for lineno, record in read_records(path):
        where = f"{path}:{lineno}"
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in record]
        if missing:
            raise DataError(f"{where}: a preference pair needs \"prompt\", \"chosen\" and \"rejected\"; "
                            f"missing {', '.join(missing)}")
        prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, list) or not prompt:
            raise DataError(f"{where}: \"prompt\" must be a non-empty list of chat messages or a string")
        # SFT's parser checks the roles and texts; it wants an assistant turn, which the answers will be
        messages = parse_dialogue({"messages": [*prompt, {"role": "assistant", "content": ""}]}, where)[:-1]
        if not (isinstance(chosen, str) and isinstance(rejected, str)) or not chosen.strip() or chosen == rejected:
            raise DataError(f"{where}: \"chosen\" and \"rejected\" must be two different non-empty texts")
        pairs.append((messages, chosen, rejected))
    if not pairs:
        raise DataError(f"{path} holds no preference pairs")
    return pairs


def split_answer(tokenizer: Any, messages: list[Message], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of `messages` answered by `answer`, tokenized segment by segment as SFT does;
    the answer is its content, closing <|im_end|> and the newline after it, the prompt all before it, the
    assistant header included."""
    pieces = [tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
              for text, _ in segments(tokenizer, [*messages, {"role": "assistant", "content": answer}])]
    return [i for piece in pieces[:-1] for i in piece], pieces[-1]


def encode_pair(tokenizer: Any, messages: list[Message], chosen: str, rejected: str, max_tokens: int) -> Encoded | None:
    """The chosen and rejected (ids, labels), at most `max_tokens` long, labelled on the final answer only.

    Too long: as SFT, the prompt's oldest turns after the system message go first (it is cut at a user turn),
    until the longer answer fits; this is done once for the pair, so both answers follow the same prompt
    tokens (cut apart, the margin would also compare two prompts). If the answers still do not fit after
    the latest user turn, their ends are cut. None if no answer token remains.
    """
    system = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    while True:
        (prompt, chosen_ids), (_, rejected_ids) = (split_answer(tokenizer, system + rest, answer)
                                                   for answer in (chosen, rejected))
        later = [i for i, m in enumerate(rest) if i > 0 and m["role"] == "user"]
        if len(prompt) + max(len(chosen_ids), len(rejected_ids)) <= max_tokens or not later:
            break
        rest = rest[later[0]:]
    if len(prompt) >= max_tokens:
        return None
    chosen_seq, rejected_seq = (((prompt + ids)[:max_tokens], ([IGNORE] * len(prompt) + ids)[:max_tokens])
                                for ids in (chosen_ids, rejected_ids))
    return chosen_seq, rejected_seq


def encode_pairs(tokenizer: Any, pairs: list[Pair], seq_len: int) -> list[Encoded]:
    """Each pair as two (ids, labels) sequences sharing the prompt; pairs with no answer token left within
    `seq_len` are dropped."""
    out = [encode_pair(tokenizer, messages, chosen, rejected, seq_len + 1) for messages, chosen, rejected in pairs]
    return [e for e in out if e is not None]


def sequence_logps(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over each row's labelled tokens (inputs and labels already shifted): [rows]."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    learned = labels != IGNORE
    picked = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0)[..., None])[..., 0]
    return (picked * learned).sum(-1)


def make_collate(examples: list[Encoded], ref: torch.Tensor, pad_id: int) -> Any:
    """Batches of 2B shifted rows (the chosen answers, then the rejected ones) with their reference
    log-probabilities: one forward scores both sides."""

    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        seqs = [examples[i][0] for i in rows] + [examples[i][1] for i in rows]
        ids, labels = pad([s[0] for s in seqs], pad_id), pad([s[1] for s in seqs], IGNORE)
        mask = pad([[1] * len(s[0]) for s in seqs], 0)
        return {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "labels": labels[:, 1:],
                "ref_logps": torch.cat([ref[rows, 0], ref[rows, 1]])}

    return collate


@torch.no_grad()
def reference_logps(model: Any, examples: list[Encoded], pad_id: int, batch_size: int) -> torch.Tensor:
    """[n, 2] log-probabilities of the chosen and rejected answers under `model` (the frozen reference)."""
    model.eval()
    zeros = torch.zeros(len(examples), 2)
    collate = make_collate(examples, zeros, pad_id)
    out = []
    batches = in_order(len(examples), batch_size, collate)
    for batch in tqdm(batches, total=-(-len(examples) // batch_size), desc="reference log-probs", unit="batch",
                      dynamic_ncols=True, leave=False):
        batch = to_device(batch, device())
        logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).cpu()
        out.append(logps.view(2, -1).T)
    return torch.cat(out)


def disable_dropout(model: torch.nn.Module) -> None:
    """Switch off every dropout of `model`: nn.Dropout modules (LoRA's too) and the float probabilities that
    attention layers copy from the config and read at forward time (Llama's `attention_dropout`).

    The reference's log-probabilities are taken without dropout (eval mode); a policy trained with dropout
    on would score its answers with noise the reference lacks, so log pi - log ref would be biased even
    where the two are the same model (at step 0 the margins would not be 0, the loss not log 2). The
    config is left alone: the exported model keeps its dropout for later fine-tuning.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if "drop" in name and type(value) is float:
                setattr(module, name, 0.0)


@dataclass
class DpoObjective:
    """The DPO loss of a batch from `make_collate`; `tokens` counts pairs, so validation averages per pair.

    `sft_weight` > 0 adds that times the chosen answers' NLL per token (RPO, Pang et al. 2024): DPO alone
    only widens the gap between the answers and may lower both likelihoods, which can hurt generation."""

    beta: float
    sft_weight: float = 0.0
    name: str = "dpo"

    def margins(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """beta x (how much more the model prefers chosen over rejected than the reference does), per pair."""
        return self._margins_and_logps(model, batch)[0]

    def _margins_and_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        chosen, rejected = (logps - batch["ref_logps"]).chunk(2)
        return self.beta * (chosen - rejected), logps

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        margins, logps = self._margins_and_logps(model, batch)
        loss = -F.logsigmoid(margins).mean()
        if self.sft_weight:
            chosen_tokens = (batch["labels"][:len(margins)] != IGNORE).sum().clamp(min=1)
            loss = loss - self.sft_weight * logps[:len(margins)].sum() / chosen_tokens
        return loss, {"tokens": torch.tensor(len(margins), device=margins.device)}


@torch.no_grad()
def reward_accuracy(model: Any, objective: DpoObjective, batches: Any) -> float:
    """Share of pairs whose margin is positive: the model ranks the chosen answer higher than the reference."""
    model.eval()
    margins = torch.cat([objective.margins(model, to_device(b, device())).cpu() for b in batches])
    return float((margins > 0).float().mean())


def dpo(cfg: DpoConfig) -> Path:
    """Train a causal LM on preference pairs with DPO; return the run folder (a chat model or LoRA adapter)."""
    tokenizer = chat_tokenizer(cfg, "DPO", "a `genforge finetune sft` run")
    inputs = run_inputs(cfg)
    check_run_folder(cfg, inputs=inputs)  # before the data are read and tokenised: minutes
    pairs = read_pairs(cfg.data)
    if cfg.val_data is not None:
        train_pairs, val_pairs = pairs, read_pairs(cfg.val_data)
    else:
        train_pairs, val_pairs = hash_split(pairs, text_of=lambda p: "\n".join(m["content"] for m in p[0]) + p[1])
    train_ex, val_ex = (encode_pairs(tokenizer, train_pairs, cfg.seq_len),
                        encode_pairs(tokenizer, val_pairs, cfg.seq_len))
    if not train_ex or not val_ex:
        raise DataError(f"no {'training' if not train_ex else 'validation'} pair keeps an answer token within "
                        f"--seq-len {cfg.seq_len}")
    cfg = fit_batch_size(cfg, len(train_ex))
    if cfg.epochs:
        cfg = dataclasses.replace(cfg, max_steps=steps_for(cfg.epochs, len(train_ex), cfg.batch_size, cfg.grad_accum))

    torch.manual_seed(cfg.seed)
    lm = load_causal_lm(cfg.model).to(device())
    pad_id = tokenizer.pad_token_id
    train_ref = reference_logps(lm, train_ex, pad_id, cfg.batch_size)
    val_ref = reference_logps(lm, val_ex, pad_id, cfg.batch_size)
    model = trainable_lm(lm, cfg)
    disable_dropout(model)
    params = trainable_params(model)
    started = prepare_output(cfg, inputs=inputs)  # only now, with every input read: a bad one leaves an earlier run whole
    objective = DpoObjective(cfg.beta, cfg.sft_weight)
    val_collate = make_collate(val_ex, val_ref, pad_id)

    def eval_data():
        return in_order(len(val_ex), cfg.batch_size, val_collate, cfg.eval_batches)

    before = evaluate_loss(model.to(device()), objective, eval_data(), device=device())["loss"]
    batches = ShuffledBatches(len(train_ex), cfg.batch_size, cfg.grad_accum, cfg.seed,
                              make_collate(train_ex, train_ref, pad_id))
    result = train(model, objective, batches, cfg, cfg.out, eval_data=eval_data, dist=Dist(device=device()))

    load_weights(model, best_checkpoint(cfg.out))
    best_val = result.best or result.last or {}
    metrics = {"val_loss_before": before, "val_loss": best_val.get("loss"),
               "val_reward_accuracy": reward_accuracy(model, objective, eval_data()), "best_step": result.best_step,
               "steps": result.steps, "train_seconds": round(result.seconds, 2), "stop_reason": result.stop_reason,
               "train_pairs": len(train_ex), "val_pairs": len(val_ex), "beta": cfg.beta, "sft_weight": cfg.sft_weight,
               "params": params["total"], "trainable_params": params["trainable"]}
    export(cfg, model.model, tokenizer)
    plot_loss(cfg.out / "logs")
    return record_chat_run(cfg, "dpo", "dpo", metrics, started,
                           ("val_loss_before", "val_loss", "val_reward_accuracy", "best_step", "steps",
                            "train_seconds", "stop_reason", "train_pairs", "trainable_params"))
