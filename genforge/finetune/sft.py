"""`genforge finetune sft`: chat dialogues + a causal LM -> a chat model (full, merged LoRA, or adapter).

Dialogues are rendered with the tokenizer's own chat template (ChatML for genforge tokenizers), the
same one `genforge chat` and `generate --chat` use, so training and generation see identical text.
Which tokens are learned is decided per message: the template is applied to growing prefixes of the
dialogue, and the text each message adds is its segment; an assistant segment is split into its
header (`<|im_start|>assistant\\n`, the generation prompt: not learned) and its content with the
closing `<|im_end|>` and the newline after it (learned, so the model learns to stop). The loop, objective (causal LM with
labels -100 on unlearned tokens) and checkpoints are the engine's.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch

from genforge.adversarial.perturb import wrap_adversarial
from genforge.artifacts import MANIFEST, read_manifest, write_manifest
from genforge.errors import ConfigError, DataError
from genforge.finetune.batches import ShuffledBatches, fit_batch_size, in_order, pad, steps_for
from genforge.finetune.card import write_card
from genforge.finetune.classifier import refuse_classifier
from genforge.finetune.config import FinetuneConfig, SftConfig
from genforge.finetune.data import JSON_KINDS, hash_split, read_records
from genforge.finetune.lora import apply_lora, save_model
from genforge.finetune.model import (
    Wrapped,
    freeze,
    hf_config,
    is_decoder,
    load_pretrained,
    load_tokenizer,
    load_weights,
    trainable_params,
)
from genforge.finetune.run import (
    best_checkpoint,
    check_run_folder,
    check_seq_len,
    device,
    prepare_output,
    run_inputs,
)
from genforge.models.load import fit_tokenizer, read_model_config
from genforge.train.distributed import Dist
from genforge.train.engine import train
from genforge.train.evaluate import evaluate_loss
from genforge.train.logs import plot_loss
from genforge.train.objectives import IGNORE, ClmObjective

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "model": "assistant", "bot": "assistant", "chatgpt": "assistant"}

Message = dict[str, str]


def parse_dialogue(record: dict[str, Any], where: str) -> list[Message]:
    """The messages of one record: OpenAI `messages` (role/content) or ShareGPT `conversations` (from/value)."""
    if "messages" in record:
        turns, role_key, text_key = record["messages"], "role", "content"
    elif "conversations" in record:
        turns, role_key, text_key = record["conversations"], "from", "value"
    else:
        raise DataError(f"{where}: expected a \"messages\" (OpenAI) or \"conversations\" (ShareGPT) list; "
                        f"found keys {', '.join(record) or 'none'}")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: the dialogue must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise DataError(f"{where}: turn {i} must be an object with \"{role_key}\" and \"{text_key}\"")
        role = ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise DataError(f"{where}: turn {i} has unknown role {turn[role_key]!r} "
                            f"(known: {', '.join(sorted(ROLES))})")
        if not isinstance(turn[text_key], str):
            raise DataError(f"{where}: turn {i} {text_key} must be a string")
        messages.append({"role": role, "content": turn[text_key]})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the dialogue has no assistant turn to learn from")
    if messages[0]["role"] == "assistant":  # nothing to render before it: the chat template refuses that
        raise DataError(f"{where}: turn 0 is an assistant turn; a dialogue opens with a user (or system) turn")
    return messages


def read_dialogues(path: Path, system: str | None = None) -> list[list[Message]]:
    dialogues = []
    for lineno, record in read_records(path, kinds=JSON_KINDS):
        messages = parse_dialogue(record, f"{path}:{lineno}")
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        dialogues.append(messages)
    if not dialogues:
        raise DataError(f"{path} holds no dialogues")
    return dialogues


def ensure_chat_template(tokenizer: Any, where: Path) -> None:
    """Give a genforge tokenizer without a template the ChatML one; refuse a tokenizer that cannot chat."""
    from genforge.data.tokenizer import CHAT_TEMPLATE, IM_END, IM_START

    if getattr(tokenizer, "chat_template", None):
        return
    vocab = tokenizer.get_vocab()
    if IM_START in vocab and IM_END in vocab:
        tokenizer.chat_template = CHAT_TEMPLATE
        return
    raise ConfigError(f"the tokenizer of {where} has no chat template and no {IM_START}/{IM_END} tokens; "
                      "SFT needs a chat model tokenizer (e.g. one made by `genforge tokenizer train`)")


def segments(tokenizer: Any, messages: list[Message]) -> list[tuple[str, bool]]:
    """(text, learned) pieces whose concatenation is the templated dialogue; learned = assistant content."""

    def render(msgs: list[Message], prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    out, done = [], ""
    for i, message in enumerate(messages):
        full = render(messages[:i + 1])
        if message["role"] == "assistant":
            head = render(messages[:i], prompt=True)
            if not (head.startswith(done) and full.startswith(head)):
                raise ConfigError("the tokenizer's chat template does not render dialogues incrementally; "
                                  "SFT needs a template like ChatML")
            out += [(head[len(done):], False), (full[len(head):], True)]
        else:
            if not full.startswith(done):
                raise ConfigError("the tokenizer's chat template does not render dialogues incrementally; "
                                  "SFT needs a template like ChatML")
            out.append((full[len(done):], False))
        done = full
    return out


def encode_dialogue(tokenizer: Any, messages: list[Message], *, max_tokens: int,
                    train_on_prompt: bool = False) -> tuple[list[int], list[int]] | None:
    """(token ids, labels) of a dialogue, at most `max_tokens` long; labels are IGNORE on unlearned tokens.

    Too long: the oldest turns after the system message go first (a dialogue is cut at a user turn);
    if the latest exchange alone is still too long its end is cut. None if nothing learnable remains.
    """
    system = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    while True:
        ids, labels = [], []
        for text, learned in segments(tokenizer, system + rest):
            # verbose=False: the dialogue is cut to max_tokens below, so transformers' warning that a text
            # exceeds the model's positions ("will result in indexing errors") would only alarm
            piece = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            ids += piece
            labels += piece if (learned or train_on_prompt) else [IGNORE] * len(piece)
        later = [i for i, m in enumerate(rest) if i > 0 and m["role"] == "user"]
        if len(ids) <= max_tokens or not later or not any(m["role"] == "assistant" for m in rest[later[0]:]):
            break
        rest = rest[later[0]:]
    ids, labels = ids[:max_tokens], labels[:max_tokens]
    return (ids, labels) if any(lab != IGNORE for lab in labels[1:]) else None


def dialogue_text(dialogue: list[Message]) -> str:
    """A dialogue's messages as one text: what its hash split bucket is computed from (SFT, federated SFT and
    the support app's checks must agree on it)."""
    return "\n".join(m["content"] for m in dialogue)


Example = tuple[list[int], list[int], list[int]]  # token ids, labels, position ids


def pack_examples(examples: list[tuple[list[int], list[int]]], max_tokens: int) -> list[Example]:
    """Greedy packing, in order: consecutive dialogues share a sequence while they fit in `max_tokens`.

    Packed dialogues are isolated: each one's position ids restart at 0, and from that restart the model's
    attention builds a block-diagonal causal mask (transformers' packed-sequence format, `make_collate`), so a
    dialogue reads neither the dialogues before it nor their positions, and its loss packed is its loss alone.
    """
    packed: list[Example] = []
    for ids, labels in examples:
        if packed and len(packed[-1][0]) + len(ids) <= max_tokens:
            packed[-1] = (packed[-1][0] + ids, packed[-1][1] + labels, packed[-1][2] + list(range(len(ids))))
        else:
            packed.append((list(ids), list(labels), list(range(len(ids)))))
    return packed


def make_collate(examples: list[Example], pad_id: int, positions: bool = True) -> Any:
    """Shifted causal-LM batches: inputs = ids[:-1], labels = labels[1:], padding masked and unlearned.

    With `positions` the batch carries `position_ids` (restarting at each packed dialogue; padding counts
    from 0 too), which `ClmObjective` passes instead of the attention mask: a causal model needs no mask for
    right padding, and transformers isolates packed sequences only when it has no 2-D mask. The mask stays in
    the batch for counting tokens. Without `positions` (a model whose forward takes no position ids) packed
    dialogues attend to the ones before them."""

    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        ids = pad([examples[i][0] for i in rows], pad_id)
        labels = pad([examples[i][1] for i in rows], IGNORE)
        mask = pad([[1] * len(examples[i][0]) for i in rows], 0)
        batch = {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "labels": labels[:, 1:]}
        if positions:
            batch["position_ids"] = pad([examples[i][2] for i in rows], 0)[:, :-1]
        return batch

    return collate


def encode_all(tokenizer: Any, dialogues: list[list[Message]], cfg: SftConfig) -> list[Example]:
    out = [encode_dialogue(tokenizer, d, max_tokens=cfg.seq_len + 1, train_on_prompt=cfg.train_on_prompt)
           for d in dialogues]
    out = [e for e in out if e is not None]
    if not out:
        raise DataError(f"no dialogue of {cfg.data} keeps an assistant token within --seq-len {cfg.seq_len}")
    if cfg.pack:
        return pack_examples(out, cfg.seq_len + 1)
    return [(ids, labels, list(range(len(ids)))) for ids, labels in out]


def takes_position_ids(model: Any) -> bool:
    """Whether a Hugging Face model's forward accepts `position_ids` (most decoders; not ALiBi ones like BLOOM)."""
    return "position_ids" in inspect.signature(model.forward).parameters


def load_causal_lm(path: Path, dropout: float = -1.0) -> Any:
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, path, hf_config(path, dropout=dropout))[0]


def chat_tokenizer(cfg: FinetuneConfig, task: str, base_hint: str) -> Any:
    """The tokenizer of --model, once the model is checked to be a causal LM that fits --seq-len and the
    tokenizer to chat (SFT, DPO)."""
    refuse_classifier(cfg.model, f"{task} needs a causal LM base, such as {base_hint}")
    base_config = read_model_config(cfg.model)
    check_seq_len(cfg, base_config)
    if not is_decoder(base_config):
        raise ConfigError(f"model {cfg.model} is an encoder; {task} needs a causal LM (decoder)")
    tokenizer = load_tokenizer(cfg.model)
    ensure_chat_template(tokenizer, cfg.model)
    return tokenizer


def trainable_lm(lm: Any, cfg: FinetuneConfig) -> Wrapped:
    """`lm` frozen as --freeze-* says, or wrapped in LoRA adapters, behind the engine's module wrapper."""
    freeze(lm, layers=cfg.freeze_layers, embeddings=cfg.freeze_embeddings)
    if cfg.lora_r:
        lm = apply_lora(lm, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets,
                        task_type="CAUSAL_LM")
    return Wrapped(lm)


def sft(cfg: SftConfig) -> Path:
    """Fine-tune a causal LM on dialogues; return the run folder (a chat model or a LoRA adapter)."""
    tokenizer = chat_tokenizer(cfg, "SFT", "the model the classifier was fine-tuned from")
    inputs = run_inputs(cfg)
    check_run_folder(cfg, inputs=inputs)  # before the data are read and tokenised: minutes
    dialogues = read_dialogues(cfg.data, cfg.system)
    if cfg.val_data is not None:
        train_set, val_set = dialogues, read_dialogues(cfg.val_data, cfg.system)
    else:
        train_set, val_set = hash_split(dialogues, text_of=dialogue_text)
    train_ex, val_ex = encode_all(tokenizer, train_set, cfg), encode_all(tokenizer, val_set, cfg)
    cfg = fit_batch_size(cfg, len(train_ex))
    if cfg.epochs:
        cfg = dataclasses.replace(cfg, max_steps=steps_for(cfg.epochs, len(train_ex), cfg.batch_size, cfg.grad_accum))

    torch.manual_seed(cfg.seed)
    lm = load_causal_lm(cfg.model, cfg.dropout)
    positions = takes_position_ids(lm)
    model = trainable_lm(lm, cfg)
    params = trainable_params(model)
    started = prepare_output(cfg, inputs=inputs)  # only now, with every input read: a bad one leaves an earlier run whole
    objective = ClmObjective()
    val_collate = make_collate(val_ex, tokenizer.pad_token_id, positions)

    def eval_data():
        return in_order(len(val_ex), cfg.batch_size, val_collate, cfg.eval_batches)

    before = evaluate_loss(model.to(device()), objective, eval_data(), device=device())["loss"]
    batches = ShuffledBatches(len(train_ex), cfg.batch_size, cfg.grad_accum, cfg.seed,
                              make_collate(train_ex, tokenizer.pad_token_id, positions))
    result = train(model, wrap_adversarial(objective, cfg), batches, cfg, cfg.out, eval_data=eval_data,
                   dist=Dist(device=device()))

    load_weights(model, best_checkpoint(cfg.out))
    export(cfg, model.model, tokenizer)
    plot_loss(cfg.out / "logs")
    best_val = result.best or result.last or {}
    metrics = {"val_loss_before": before, "val_loss": best_val.get("loss"), "best_step": result.best_step,
               "steps": result.steps, "train_seconds": round(result.seconds, 2), "stop_reason": result.stop_reason,
               "train_sequences": len(train_ex), "val_sequences": len(val_ex), "params": params["total"],
               "trainable_params": params["trainable"]}
    return record_chat_run(cfg, "sft", "clm", metrics, started,
                           ("val_loss_before", "val_loss", "best_step", "steps", "train_seconds", "stop_reason",
                            "train_sequences", "trainable_params"))


def export(cfg: FinetuneConfig, lm: Any, tokenizer: Any) -> None:
    """The run folder (SFT, DPO): a causal-LM HF folder (or the adapter) + the chat tokenizer, whose
    generation_config.json stops at <|im_end|>, so plain `model.generate` ends a reply where chat does.

    An adapter folder gets that file too: peft takes the base's (which stops at eos only) and does not read
    it by itself, so the model card's usage passes it (`GenerationConfig.from_pretrained(folder)`)."""
    from genforge.data.tokenizer import IM_END

    config = lm.config  # the base's, for an adapter
    if cfg.lora_r and cfg.merge:
        lm = lm.merge_and_unload()
    end = tokenizer.convert_tokens_to_ids(IM_END) if IM_END in tokenizer.get_vocab() else None
    gen = lm.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    if end is not None and end not in eos:
        gen.eos_token_id = [e for e in eos if e is not None] + [end]
    save_model(lm, cfg.out, merge=False)
    if cfg.lora_r and not cfg.merge:  # peft saves the adapter alone
        gen.save_pretrained(cfg.out)
    fit_tokenizer(tokenizer, config).save_pretrained(cfg.out)


def record_chat_run(cfg: FinetuneConfig, task: str, objective: str, metrics: dict[str, Any], started: float,
                    shown: tuple[str, ...]) -> Path:
    """The finished chat run (SFT, DPO): model card, manifest (written last) and the `shown` metrics as a table."""
    from rich.console import Console
    from rich.table import Table

    parent = read_manifest(cfg.model) if (Path(cfg.model) / MANIFEST).is_file() else None
    inputs = [cfg.data] + ([cfg.val_data] if cfg.val_data else [])
    write_card(cfg.out, task, cfg, metrics, parent, inputs)
    write_manifest(cfg.out, "finetune", cfg, inputs=inputs, parent=parent, metrics=metrics, started=started,
                   extra={"task": task, "objective": objective, "model": {"params": metrics["params"],
                                                                          "base_model": str(cfg.model)}})
    table = Table(title=f"finetune {task} -> {cfg.out}", show_header=False)
    for key in shown:
        value = metrics.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)
    return cfg.out
