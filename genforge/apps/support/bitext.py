"""`genforge app support from-bitext`: the shared customer-service data as a company's FAQ and logs.

Bitext customer support (27 intents, customer requests with agent replies), split by sha256 of the
request (data README): train -> faq.csv (id = intent, each request a question variant, answer = the
intent's canonical reply: the medoid of its replies in TF-IDF space, the most typical one) and
history.jsonl (the conversations, for SFT); bucket 8 -> val.csv, bucket 9 -> test.csv (held-out
paraphrases). CLINC150's out-of-scope queries (oos_train/oos_val/oos_test) are the questions a person
must take: oos.csv, and the 'oos' rows of val.csv and test.csv.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from genforge.apps.support.config import FromBitextConfig
from genforge.artifacts import atomic_open, reading, write_jsonl
from genforge.errors import DataError
from genforge.finetune.data import hash_bucket

BITEXT = Path("bitext_customer_support") / "Bitext_Sample_Customer_Support_Training_Dataset.csv"
CLINC = Path("clinc150") / "data_full.json"
BITEXT_COLUMNS = ("instruction", "intent", "response")


def canonical_replies(rows: list[dict[str, str]]) -> dict[str, str]:
    """The medoid reply of each intent (highest mean TF-IDF cosine to the intent's other replies)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    by_intent: dict[str, list[str]] = {}
    for r in rows:
        by_intent.setdefault(r["intent"], []).append(r["response"])
    out = {}
    for intent, replies in sorted(by_intent.items()):
        vectors = TfidfVectorizer(sublinear_tf=True).fit_transform(replies)
        out[intent] = replies[int((vectors @ vectors.T).mean(axis=1).argmax())]
    return out


def read_bitext(path: Path) -> list[dict[str, str]]:
    """The rows of the Bitext CSV with a request and a reply (their CRLF line ends made LF)."""
    with reading(path, f"expected the Bitext customer-support CSV with columns {', '.join(BITEXT_COLUMNS)}",
                 error=DataError), open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in BITEXT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"it lacks the column(s) {', '.join(missing)}")
        return [{**r, "response": r["response"].replace("\r\n", "\n")} for r in reader
                if all((r[c] or "").strip() for c in BITEXT_COLUMNS)]


def read_clinc_oos(path: Path) -> dict[str, list[str]]:
    """CLINC150's out-of-scope queries per split (oos_train, oos_val, oos_test)."""
    with reading(path, "expected CLINC150's data_full.json", error=DataError):
        clinc = json.loads(path.read_text(encoding="utf-8"))
        return {split: [str(text) for text, _ in clinc[split]] for split in ("oos_train", "oos_val", "oos_test")}


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def from_bitext(cfg: FromBitextConfig) -> dict[str, int]:
    from genforge.artifacts import begin_output, write_manifest

    data = Path(cfg.data)
    if not (data / BITEXT).is_file() or not (data / CLINC).is_file():
        raise DataError(f"{data} must hold {BITEXT} and {CLINC} (the shared data folder)")
    rows, oos = read_bitext(data / BITEXT), read_clinc_oos(data / CLINC)
    if not rows:
        raise DataError(f"{data / BITEXT} holds no request with a reply")
    out = Path(cfg.out)
    started = begin_output(out, "app.support.from_bitext")
    parts: dict[int, list] = {}
    for r in rows:
        parts.setdefault(hash_bucket(r["instruction"].strip()), []).append(r)
    train = [r for b, rs in parts.items() if b < 8 for r in rs]
    canon = canonical_replies(train)
    _write_csv(out / "faq.csv", ["id", "question", "answer"],
               [(r["intent"], r["instruction"].strip(), canon[r["intent"]]) for r in train])
    history = train[:cfg.max_history] if cfg.max_history else train
    write_jsonl(out / "history.jsonl", ({"messages": [{"role": "user", "content": r["instruction"].strip()},
                                                      {"role": "assistant", "content": r["response"].strip()}]}
                                        for r in history))
    for name, bucket, split in (("val.csv", 8, "oos_val"), ("test.csv", 9, "oos_test")):
        _write_csv(out / name, ["text", "label"], [(r["instruction"].strip(), r["intent"]) for r in parts.get(bucket, [])]
                   + [(t, "oos") for t in oos[split]])
    _write_csv(out / "oos.csv", ["text"], [(t,) for t in oos["oos_train"]])
    counts = {"faq_rows": len(train), "intents": len(canon), "history": len(history),
              "val": len(parts.get(8, [])) + len(oos["oos_val"]), "test": len(parts.get(9, [])) + len(oos["oos_test"]),
              "oos_train": len(oos["oos_train"])}
    write_manifest(out, "app.support.from_bitext", cfg, started=started, metrics=counts)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), f"-> {out}")
    return counts
