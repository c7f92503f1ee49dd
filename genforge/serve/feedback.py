"""`genforge feedback export`: users' feedback on stored chat responses as fine-tuning data.

- sft.jsonl: each corrected answer as an OpenAI `messages` dialogue (the request's messages, then the
  correction as the assistant turn), the format `genforge finetune sft --data` reads;
- preference.jsonl: `{"prompt": messages, "chosen": text, "rejected": text}` from a correction against the
  answer it corrects, and from answers to the same messages that users rated up and down (a choice's
  latest rating counts: feedback names the choice of a response with n > 1; at most MAX_PAIRS pairs per
  prompt);
- manifest.json (stage "feedback.export") with each file's SHA-256 and counts: the manifest of a model
  fine-tuned on DIR/sft.jsonl names that file and hash among its inputs, so the model's lineage leads
  back to this export and its database.
Only chat responses that completed (status 200) are exported; completions prompts are not dialogues, and
neither is a stored request whose messages `genforge finetune` would refuse (no user message, a turn without
text): such rows are skipped and counted, so one of them cannot make a whole file unreadable for training.
Answers the safety filters blocked (finish `content_filter`) are left out with their feedback: a "correction"
of a refusal would teach the next model to say what the blocklist blocks. Prompts and corrections go through
the data stage's PII scrubber (`--no-pii` to keep them as typed): the served answers are stored redacted, so a
correction with an address would otherwise be "chosen" over the answer that hid it.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.artifacts import begin_output, sha256_file, write_jsonl, write_manifest
from genforge.errors import ConfigError, DataError
from genforge.serve.config import FeedbackExportConfig, default_db_url
from genforge.serve.db import Feedback, StoredResponse, connect

MAX_PAIRS = 16


def _rows(engine: Any, model: str | None) -> list[tuple[StoredResponse, list[Feedback]]]:
    with Session(engine) as session:
        if model is not None:  # a mistyped --model would read as "no feedback yet" and write empty files
            names = list(session.scalars(select(StoredResponse.model).distinct().order_by(StoredResponse.model)))
            if model not in names:
                raise ConfigError(f"no stored responses to model {model!r} in the database "
                                  f"(models: {', '.join(names) or 'none'})")
        query = (select(StoredResponse, Feedback).join(Feedback, Feedback.response_id == StoredResponse.id)
                 .where(StoredResponse.route == "chat", StoredResponse.status == 200)
                 .order_by(StoredResponse.created, Feedback.id))
        if model is not None:
            query = query.where(StoredResponse.model == model)
        grouped: dict[str, tuple[StoredResponse, list[Feedback]]] = {}
        for response, fb in session.execute(query):
            grouped.setdefault(response.id, (response, []))[1].append(fb)
        return list(grouped.values())


def _dialogue(response: StoredResponse, feedback: list[Feedback]) -> tuple[list[dict], list[str]]:
    """(request messages, answers) of a stored chat response, with an answer for every choice its feedback
    rates; a row that does not decode (edited by hand, or written by another program) is a DataError naming
    it, raised before the export folder is touched."""
    try:
        messages = json.loads(response.request)["messages"]
        answers = json.loads(response.response)
        if not isinstance(messages, list) or not isinstance(answers, list) or not all(
                isinstance(answers[fb.choice], str) for fb in feedback):
            raise TypeError("no list of messages in the request, or no answer text for a rated choice")
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"stored response {response.id} in the database is corrupt ({type(e).__name__}: {e}): "
                        "delete its row from the responses table") from None
    return messages, answers


def chat_prompt(messages: list[Any]) -> list[dict] | None:
    """The request's messages as `genforge finetune sft|dpo` read them (checked by their own parser; developer
    turns become system turns, as the server rendered them), or None when they are no chat to learn from."""
    from genforge.finetune.sft import parse_dialogue

    turns = [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
             for m in messages]
    try:  # the parser wants an assistant turn: the answer will be one
        prompt = parse_dialogue({"messages": [*turns, {"role": "assistant", "content": ""}]}, "")[:-1]
    except DataError:
        return None
    return prompt if any(m["role"] == "user" for m in prompt) else None


def blocked(response: StoredResponse, choice: int) -> bool:
    """Whether the safety filters blocked that choice (the whole request, when its input was blocked)."""
    finishes = (response.finish or "").split(",")
    return (finishes[choice] if choice < len(finishes) else finishes[-1]) == "content_filter"


def build(rows: list[tuple[StoredResponse, list[Feedback]]], pii: bool = True
          ) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(SFT dialogues, preference pairs, {"skipped": responses that are no valid chat, "blocked": feedback on
    answers the safety filters blocked}) of responses with their feedback, without duplicates: one SFT row per
    (prompt, correction), one pair per (prompt, chosen, rejected) whether a correction or ratings made it."""
    from genforge.data.pii import scrub_pii

    def clean(text: str) -> str:
        return scrub_pii(text)[0] if pii else text

    sft, prefs, seen, emitted = [], [], set(), set()
    counts = {"skipped": 0, "blocked": 0}
    rated: dict[str, dict[bool, list[str]]] = defaultdict(lambda: {True: [], False: []})
    prompts: dict[str, list[dict]] = {}

    def pair(key: str, chosen: str, rejected: str) -> None:
        if chosen.strip() != rejected.strip() and (key, chosen, rejected) not in emitted:
            emitted.add((key, chosen, rejected))
            prefs.append({"prompt": prompts[key], "chosen": chosen, "rejected": rejected})

    for response, feedback in rows:
        stored, answers = _dialogue(response, feedback)
        messages = chat_prompt(stored)
        if messages is None:
            counts["skipped"] += 1
            continue
        messages = [{**m, "content": clean(m["content"])} for m in messages]
        key = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        prompts[key] = messages
        kept = [fb for fb in feedback if not blocked(response, fb.choice)]
        counts["blocked"] += len(feedback) - len(kept)
        for fb in kept:
            fix = clean((fb.correction or "").strip())
            if fix and (key, fix) not in seen:
                seen.add((key, fix))
                sft.append({"messages": [*messages, {"role": "assistant", "content": fix}]})
            if fix:
                pair(key, fix, answers[fb.choice])
        for choice in dict.fromkeys(fb.choice for fb in kept):
            verdict = next((fb.positive for fb in reversed(kept)
                            if fb.choice == choice and fb.positive is not None), None)
            if verdict is not None and answers[choice] not in rated[key][verdict]:
                rated[key][verdict].append(answers[choice])
    for key, by in rated.items():
        for up, down in list(itertools.product(by[True], by[False]))[:MAX_PAIRS]:
            pair(key, up, down)
    return sft, prefs, counts


def export(cfg: FeedbackExportConfig) -> dict[str, Any]:
    """Write DIR/sft.jsonl, DIR/preference.jsonl and the manifest; returns the counts."""
    import typer

    url = cfg.db or default_db_url()
    engine = connect(url, create=False)
    rows = _rows(engine, cfg.model)
    sft, prefs, dropped = build(rows, pii=cfg.pii)
    started = begin_output(cfg.out, "feedback.export")  # only now, with the database read: a bad row leaves an earlier export whole
    out = Path(cfg.out)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "preference.jsonl", prefs)
    counts = {"responses": len(rows), "feedback": sum(len(f) for _, f in rows), "sft": len(sft),
              "preference": len(prefs), **dropped}
    write_manifest(out, "feedback.export", cfg, started=started, metrics=counts,
                   extra={"database": engine.url.render_as_string(hide_password=True),
                          "outputs": {name: sha256_file(out / name) for name in ("sft.jsonl", "preference.jsonl")}})
    typer.echo(f"exported {counts['sft']} corrected answers to {out / 'sft.jsonl'} and {counts['preference']} "
               f"preference pairs to {out / 'preference.jsonl'} (from {counts['responses']} responses with feedback)")
    if dropped["skipped"]:
        typer.echo(f"skipped {dropped['skipped']} responses whose request is no valid chat (a user message and text "
                   "in every message): fine-tuning could not read them")
    if dropped["blocked"]:
        typer.echo(f"left out {dropped['blocked']} feedback rows on answers the safety filters blocked")
    if sft:
        typer.echo(f"fine-tune on them: genforge finetune sft --model MODEL --data {out / 'sft.jsonl'} --out DIR")
    if prefs:
        typer.echo(f"learn the preferences: genforge finetune dpo --model MODEL --data {out / 'preference.jsonl'} "
                   "--out DIR")
    return counts
