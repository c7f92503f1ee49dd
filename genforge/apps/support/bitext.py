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
from genforge.errors import DataError
from genforge.finetune.data import hash_bucket

BITEXT = Path("bitext_customer_support") / "Bitext_Sample_Customer_Support_Training_Dataset.csv"
CLINC = Path("clinc150") / "data_full.json"


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


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def from_bitext(cfg: FromBitextConfig) -> dict[str, int]:
    from genforge.artifacts import begin_output, write_manifest

    data = Path(cfg.data)
    if not (data / BITEXT).is_file() or not (data / CLINC).is_file():
        raise DataError(f"{data} must hold {BITEXT} and {CLINC} (the shared data folder)")
    out = Path(cfg.out)
    started = begin_output(out)
    with open(data / BITEXT, encoding="utf-8", newline="") as f:
        rows = [{**r, "response": r["response"].replace("\r\n", "\n")} for r in csv.DictReader(f)
                if r["instruction"].strip() and r["response"].strip()]  # the replies' line ends are CRLF
    parts: dict[int, list] = {}
    for r in rows:
        parts.setdefault(hash_bucket(r["instruction"].strip()), []).append(r)
    train = [r for b, rs in parts.items() if b < 8 for r in rs]
    canon = canonical_replies(train)
    clinc = json.loads((data / CLINC).read_text(encoding="utf-8"))
    _write_csv(out / "faq.csv", ["id", "question", "answer"],
               [(r["intent"], r["instruction"].strip(), canon[r["intent"]]) for r in train])
    history = train[:cfg.max_history] if cfg.max_history else train
    with open(out / "history.jsonl", "w", encoding="utf-8") as f:
        for r in history:
            f.write(json.dumps({"messages": [{"role": "user", "content": r["instruction"].strip()},
                                             {"role": "assistant", "content": r["response"].strip()}]},
                               ensure_ascii=False) + "\n")
    for name, bucket, oos in (("val.csv", 8, "oos_val"), ("test.csv", 9, "oos_test")):
        _write_csv(out / name, ["text", "label"], [(r["instruction"].strip(), r["intent"]) for r in parts.get(bucket, [])]
                   + [(t, "oos") for t, _ in clinc[oos]])
    _write_csv(out / "oos.csv", ["text"], [(t,) for t, _ in clinc["oos_train"]])
    counts = {"faq_rows": len(train), "intents": len(canon), "history": len(history),
              "val": len(parts.get(8, [])) + len(clinc["oos_val"]), "test": len(parts.get(9, [])) + len(clinc["oos_test"]),
              "oos_train": len(clinc["oos_train"])}
    write_manifest(out, "app.support.from_bitext", cfg, started=started, metrics=counts)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), f"-> {out}")
    return counts
