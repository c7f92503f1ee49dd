"""The chat model of the assistant, made with genforge's stages: (pretrain `small`) -> SFT on the history.

Without a base model, the `small` decoder is pretrained briefly on the history and knowledge-base text
(data prepare -> tokenizer -> pack -> pretrain, the chain of benchmarks/bench_sft.py). The SFT dialogues
carry the retrieved passages in their system prompt, exactly as the assistant will prompt at answer
time (assistant.prompt_messages), so the model learns to answer from passages, not from memory alone.

`prepare_chat` runs first, before any model is trained (the intent classifier included): it writes the SFT
dialogues, gets the tokenizer the SFT will use (--model's, or the one trained here for the `small` decoder)
and checks that SFT will have dialogues to learn from; `chat_model` trains afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from genforge.apps.support.assistant import prompt_messages
from genforge.apps.support.config import BuildConfig
from genforge.apps.support.index import HybridIndex
from genforge.apps.support.ingest import Passage
from genforge.config import validate
from genforge.errors import ConfigError, DataError

C = TypeVar("C")
SFT_DATA = "sft.jsonl"  # the grounded dialogues, in OUT/work


def grounded_dialogues(dialogues: list[list[dict]], index: HybridIndex, cfg: BuildConfig) -> list[dict]:
    """Each dialogue with the passages retrieved for its first user message in the system prompt."""
    firsts = [next((m["content"] for m in d if m["role"] == "user"), "") for d in dialogues]
    hits = index.search_many(firsts, cfg.prompt_passages)
    return [{"messages": prompt_messages(cfg.system, h, cfg.passage_chars, d)} for d, h in zip(dialogues, hits,
                                                                                              strict=True)]


def train_small_tokenizer(work: Path, texts: list[str], cfg: BuildConfig) -> Path:
    """The pretraining corpus of the `small` decoder (work/data) and its tokenizer (work/tokenizer), the folder
    returned: seconds of work, done before any training so that --seq-len is checked with the real tokenizer."""
    from genforge.data.config import PrepareConfig, TokenizerConfig
    from genforge.data.prepare import prepare
    from genforge.data.tokenizer import train_tokenizer

    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    # each stage's config is checked as its own command would check it
    prepare(checked(PrepareConfig(inputs=[corpus], out=work / "data", split_by="file", pii=False, workers=1)))
    train_tokenizer(checked(TokenizerConfig(data=work / "data", out=work / "tokenizer", vocab_size=cfg.vocab_size)))
    return work / "tokenizer"


def pretrain_small(work: Path, cfg: BuildConfig) -> Path:
    """The `small` decoder pretrained for `cfg.pretrain_minutes` on train_small_tokenizer's corpus; its run folder."""
    from genforge.data.config import PackConfig
    from genforge.data.pack import pack
    from genforge.train.config import PretrainConfig
    from genforge.train.pretrain import pretrain

    pack(checked(PackConfig(data=work / "data", tokenizer=work / "tokenizer", workers=1)))
    return pretrain(checked(PretrainConfig(data=work / "data", out=work / "lm", objective="clm", preset="small",
                                           seq_len=cfg.seq_len, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                                           max_steps=10**9, max_minutes=cfg.pretrain_minutes, eval_every=200,
                                           save_every=0, log_every=25, dropout=0.1, weight_decay=0.1, seed=cfg.seed)))


def sft_config(cfg: BuildConfig, base: Path, data: Path) -> Any:
    """The SftConfig of the chat model (LoRA by default) on `base`."""
    from genforge.finetune.config import SftConfig

    lora = {"lora_r": cfg.lora_r, "lora_alpha": 2.0 * cfg.lora_r, "lr": 2e-3} if cfg.lora_r else {"lr": 5e-4}
    return checked(SftConfig(model=base, data=data, out=Path(cfg.out) / "chat", seq_len=cfg.seq_len,
                             batch_size=16, warmup_steps=min(20, cfg.sft_steps // 5), max_steps=cfg.sft_steps,
                             max_minutes=cfg.sft_minutes, eval_every=max(cfg.sft_steps // 4, 1), log_every=20,
                             pack=True, seed=cfg.seed, **lora))


def prepare_chat(cfg: BuildConfig, dialogues: list[list[dict[str, str]]], index: HybridIndex,
                 passages: list[Passage], work: Path) -> Path:
    """Write the grounded SFT dialogues (work/sft.jsonl, returned) and, without --model, the small decoder's
    corpus and tokenizer; then check, with the tokenizer the SFT will use, what `finetune sft` would refuse
    only after the minutes of training before it: --model itself, and --seq-len (`check_sft_fits`)."""
    from genforge.finetune.model import load_tokenizer
    from genforge.finetune.sft import chat_tokenizer, dialogue_text, ensure_chat_template

    data = work / SFT_DATA
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n"
                            for d in grounded_dialogues(dialogues, index, cfg)), encoding="utf-8")
    if cfg.model is None:
        texts = [dialogue_text(d) for d in dialogues]
        texts += [f"{p.text}\n{p.answer}" if p.kind == "faq" else p.text for p in passages]
        folder = train_small_tokenizer(work, texts, cfg)
        tokenizer = load_tokenizer(folder)
        ensure_chat_template(tokenizer, folder)
    else:
        tokenizer = chat_tokenizer(sft_config(cfg, cfg.model, data), "SFT", "a `genforge pretrain` decoder")
    check_sft_fits(tokenizer, data, cfg)
    return data


def check_sft_fits(tokenizer: Any, data: Path, cfg: BuildConfig) -> None:
    """Refuse what would make the SFT find nothing to learn: a --history too small for its validation split,
    or a --seq-len in which no dialogue of its training (or validation) split keeps an answer token, the
    grounded system prompt (passages included) filling it. Split and encoded as `finetune sft` does."""
    from genforge.finetune.data import hash_split
    from genforge.finetune.sft import dialogue_text, read_dialogues

    dialogues = read_dialogues(data)
    train, val = hash_split(dialogues, text_of=dialogue_text, require_both=False)
    if not train or not val:
        raise DataError(f"{cfg.history}: the chat model's SFT validates on hash bucket 8 of the dialogues, and the "
                        f"{len(dialogues)} given leave its {'training' if not train else 'validation'} set empty; "
                        "give more dialogues")
    if all(keeps_an_answer(tokenizer, split, cfg.seq_len) for split in (train, val)):
        return
    need = max(shortest_seq_len(tokenizer, split) for split in (train, val))
    raise ConfigError(f"--seq-len {cfg.seq_len} leaves no SFT dialogue an answer token (the system prompt with "
                      f"--prompt-passages {cfg.prompt_passages} passages of --passage-chars {cfg.passage_chars} "
                      f"comes first); use --seq-len {need} or more, or shorter passages")


def keeps_an_answer(tokenizer: Any, dialogues: list[list[dict[str, str]]], seq_len: int) -> bool:
    """Whether `finetune sft --seq-len seq_len` keeps an assistant token of at least one of `dialogues`."""
    from genforge.finetune.sft import encode_dialogue

    return any(encode_dialogue(tokenizer, d, max_tokens=seq_len + 1) is not None for d in dialogues)


def shortest_seq_len(tokenizer: Any, dialogues: list[list[dict[str, str]]]) -> int:
    """The smallest --seq-len keeping an answer token of one of `dialogues` (a binary search: a longer one
    keeps at least as much; the whole longest dialogue always keeps one)."""
    from genforge.finetune.sft import encode_dialogue

    low, high = 1, max(len(encode_dialogue(tokenizer, d, max_tokens=10**9)[0]) for d in dialogues)
    while low < high:
        middle = (low + high) // 2
        if keeps_an_answer(tokenizer, dialogues, middle):
            high = middle
        else:
            low = middle + 1
    return low


def chat_model(cfg: BuildConfig, work: Path) -> Path:
    """Fine-tune (LoRA by default) the chat model on prepare_chat's dialogues, pretraining the `small` decoder
    first when there is no --model; its run folder (out/chat)."""
    from genforge.finetune.sft import sft

    base = cfg.model if cfg.model is not None else pretrain_small(work, cfg)
    return sft(sft_config(cfg, base, work / SFT_DATA))


def checked(stage_cfg: C) -> C:
    """`stage_cfg` after its own checks (a config built in code skips the ones the CLI runs)."""
    validate(stage_cfg)
    return stage_cfg
