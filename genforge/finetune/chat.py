"""`genforge chat`: an interactive multi-turn chat in the terminal, replies streamed as they are generated.

The conversation is kept as messages and re-rendered with the tokenizer's chat template every turn
(the template SFT trained with); decoding is `genforge.generate`'s, stopping at <|im_end|>. When the
dialogue outgrows the model's context the oldest turns (after the system message) are dropped.
Commands: /reset starts over, /exit (or Ctrl-D) leaves. A line whose bytes are not in stdin's encoding (a
terminal sending Latin-1 to a UTF-8 locale) ends the chat with a one-line error instead of being sent with
the bytes replaced: the model would answer a message the user did not write, and every later non-ASCII
line would be garbled the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from genforge.config import not_utf8
from genforge.errors import DataError
from genforge.finetune.config import ChatConfig


def load_chat_decoder(path: Path) -> Any:
    """A generation Decoder for a causal-LM folder or an SFT LoRA adapter folder (merged on load)."""
    from genforge.finetune.sft import ensure_chat_template
    from genforge.generate import load_decoder

    decoder = load_decoder(path)
    ensure_chat_template(decoder.tokenizer, path)
    return decoder


def prompt_ids(decoder: Any, messages: list[dict[str, str]], room: int) -> list[int]:
    """Token ids of the dialogue + the assistant header, dropping the oldest turns until `room` tokens remain."""
    tok = decoder.tokenizer
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    while True:
        text = tok.apply_chat_template(system + rest, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]  # cut to the context below
        if decoder.context is None or len(ids) + room <= decoder.context or len(rest) <= 1:
            break
        rest = rest[2:]  # the oldest user/assistant exchange
    if decoder.context and len(ids) + room > decoder.context:  # one turn longer than the context: keep its end
        ids = ids[-(decoder.context - room):]
    return ids


def reply(decoder: Any, messages: list[dict[str, str]], cfg: ChatConfig, write: Callable[[str], None]) -> str:
    """Generate the assistant's next turn, passing each text piece to `write` as it is ready."""
    from genforge.generate.api import iter_batch
    from genforge.generate.config import SamplingParams

    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    room = min(cfg.max_new_tokens, max(1, (decoder.context or cfg.max_new_tokens * 2) // 2))
    ids = prompt_ids(decoder, messages, room)
    pieces = []
    for _, piece in iter_batch(decoder, [""], params, room, chat=True, watch=True, ids=[ids]):
        pieces.append(piece)
        write(piece)
    return "".join(pieces)


def chat_loop(decoder: Any, cfg: ChatConfig, lines: Iterable[str], write: Callable[[str], None]) -> list[dict[str, str]]:
    """Run the conversation over user `lines`; return the transcript (messages)."""
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            messages = messages[:1] if cfg.system else []
            write("(conversation reset)\n")
            continue
        problem = not_utf8(text)
        if problem:
            write("\n")  # the error on a line of its own, not after the "you> " prompt of piped input
            raise DataError(f"your message is not UTF-8 text ({problem}); set the terminal (or the input) to UTF-8")
        messages.append({"role": "user", "content": text})
        write("assistant> ")
        messages.append({"role": "assistant", "content": reply(decoder, messages, cfg, write)})
        write("\n")
    return messages


def _stdin_lines(write: Callable[[str], None]) -> Iterable[str]:
    """Lines of stdin, read as bytes and decoded one at a time with bad bytes kept as escapes (for chat_loop
    to name): a strict text stdin would fail on a whole buffered chunk, losing the good lines before it."""
    while True:
        write("you> ")
        line = sys.stdin.buffer.readline()
        if not line:
            write("\n")
            return
        yield line.decode(sys.stdin.encoding or "utf-8", "surrogateescape")


def chat(cfg: ChatConfig) -> list[dict[str, str]]:
    """`genforge chat`: talk to a model until /exit or end of input."""

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    decoder = load_chat_decoder(cfg.model)
    write(f"chatting with {cfg.model} ({decoder.backend} backend); /reset to start over, /exit to leave\n")
    return chat_loop(decoder, cfg, _stdin_lines(write), write)
