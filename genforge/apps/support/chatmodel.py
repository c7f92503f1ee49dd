"""The chat model of the assistant, made with genforge's stages: (pretrain `small`) -> SFT on the history.

Without a base model, the `small` decoder is pretrained briefly on the history and knowledge-base text
(data prepare -> tokenizer -> pack -> pretrain, the chain of benchmarks/bench_sft.py). The SFT dialogues
carry the retrieved passages in their system prompt, exactly as the assistant will prompt at answer
time (assistant.prompt_messages), so the model learns to answer from passages, not from memory alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from genforge.apps.support.assistant import prompt_messages
from genforge.apps.support.config import BuildConfig
from genforge.apps.support.index import HybridIndex
from genforge.apps.support.ingest import Passage
from genforge.config import validate

C = TypeVar("C")


def grounded_dialogues(dialogues: list[list[dict]], index: HybridIndex, cfg: BuildConfig) -> list[dict]:
    """Each dialogue with the passages retrieved for its first user message in the system prompt."""
    firsts = [next((m["content"] for m in d if m["role"] == "user"), "") for d in dialogues]
    hits = index.search_many(firsts, cfg.prompt_passages)
    return [{"messages": prompt_messages(cfg.system, h, cfg.passage_chars, d)} for d, h in zip(dialogues, hits,
                                                                                              strict=True)]


def pretrain_small(work: Path, texts: list[str], cfg: BuildConfig) -> Path:
    """The `small` decoder pretrained for `cfg.pretrain_minutes` on `texts`; its run folder."""
    from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig
    from genforge.data.pack import pack
    from genforge.data.prepare import prepare
    from genforge.data.tokenizer import train_tokenizer
    from genforge.train.config import PretrainConfig
    from genforge.train.pretrain import pretrain

    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    # each stage's config is checked as its own command would check it
    prepare(checked(PrepareConfig(inputs=[corpus], out=work / "data", split_by="file", pii=False, workers=1)))
    train_tokenizer(checked(TokenizerConfig(data=work / "data", out=work / "tokenizer", vocab_size=cfg.vocab_size)))
    pack(checked(PackConfig(data=work / "data", tokenizer=work / "tokenizer", workers=1)))
    return pretrain(checked(PretrainConfig(data=work / "data", out=work / "lm", objective="clm", preset="small",
                                           seq_len=cfg.seq_len, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                                           max_steps=10**9, max_minutes=cfg.pretrain_minutes, eval_every=200,
                                           save_every=0, log_every=25, dropout=0.1, weight_decay=0.1, seed=cfg.seed)))


def chat_model(cfg: BuildConfig, dialogues: list[list[dict[str, str]]], index: HybridIndex,
               passages: list[Passage], work: Path) -> Path:
    """Fine-tune (LoRA by default) the chat model on the grounded `dialogues` (--history, read by the
    caller); its run folder (out/chat)."""
    from genforge.finetune.config import SftConfig
    from genforge.finetune.sft import sft

    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n"
                            for d in grounded_dialogues(dialogues, index, cfg)), encoding="utf-8")
    base = cfg.model
    if base is None:
        texts = ["\n".join(m["content"] for m in d) for d in dialogues]
        texts += [f"{p.text}\n{p.answer}" if p.kind == "faq" else p.text for p in passages]
        base = pretrain_small(work, texts, cfg)
    lora = {"lora_r": cfg.lora_r, "lora_alpha": 2.0 * cfg.lora_r, "lr": 2e-3} if cfg.lora_r else {"lr": 5e-4}
    return sft(checked(SftConfig(model=base, data=data, out=Path(cfg.out) / "chat", seq_len=cfg.seq_len,
                                 batch_size=16, warmup_steps=min(20, cfg.sft_steps // 5), max_steps=cfg.sft_steps,
                                 max_minutes=cfg.sft_minutes, eval_every=max(cfg.sft_steps // 4, 1), log_every=20,
                                 pack=True, seed=cfg.seed, **lora)))


def checked(stage_cfg: C) -> C:
    """`stage_cfg` after its own checks (a config built in code skips the ones the CLI runs)."""
    validate(stage_cfg)
    return stage_cfg
