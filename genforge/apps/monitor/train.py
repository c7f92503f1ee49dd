"""`genforge app monitor train`: the monitor's model folder, made only with `genforge finetune classify`.

OUT/sentiment/ is a classifier run (negative/neutral/positive) fine-tuned on every --sentiment-data file
at once (English and Chinese may be mixed; each file's raw labels are mapped by its `#RAW=LABEL,...`
suffix). With --zh-model the Chinese texts train a second one, OUT/sentiment-zh/, on that base (`scratch`:
OUT/zh-base/, a fresh small BERT on a BPE of those texts), and run time routes each text by its script.
Topics come from --topic-data through a second classifier run (OUT/topic/), or, for users without topic
labels, are discovered in the corpus (OUT/topics.json, topic_router.npz, topic_vocabulary.json; see topics.py).
OUT/manifest.json (stage "app.monitor.model") is written last and says which topic model is in use.
Training takes tens of minutes, so it resumes: OUT/train_settings.json, written first, holds the settings,
and `--resume` with the same ones keeps the classifier runs that finished and continues an unfinished one
from its checkpoint (topics, minutes of work, are discovered again).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from genforge.adversarial.transforms import CJK
from genforge.apps.monitor.config import SENTIMENTS, MonitorTrainConfig
from genforge.artifacts import (
    MANIFEST,
    atomic_open,
    begin_output,
    check_resume_folder,
    check_same_settings,
    input_file,
    read_json,
    read_manifest,
    write_json,
    write_manifest,
)
from genforge.config import check_needs, from_dict, given_keys, to_dict
from genforge.errors import ConfigError, DataError
from genforge.finetune.data import hash_bucket, read_records

MONITOR_STAGE = "app.monitor.model"
SETTINGS = "train_settings.json"
HAN = re.compile(f"[{CJK}]")


def is_chinese(text: str) -> bool:
    """Whether `text` is mostly Chinese: a character carries about a word, so it weighs as four Latin letters
    (`AAPL 跌停` is Chinese; a tweet quoting one 哈 is not)."""
    han = len(HAN.findall(text))
    return han > 0 and 4 * han >= sum(ch.isalpha() for ch in text) - han


def parse_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """`PATH#RAW=LABEL,...` -> (path, {raw: label}); no `#`: no mapping."""
    path, _, mapping = spec.partition("#")
    labels = {}
    for pair in filter(None, (p.strip() for p in mapping.split(","))):
        raw, eq, label = pair.partition("=")
        if not eq or not raw.strip() or not label.strip():
            raise ConfigError(f"label mapping {pair!r} in {spec!r} must be RAW=LABEL")
        labels[raw.strip()] = label.strip()
    return Path(path).expanduser(), labels


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(text, raw label) pairs: .txt `sentence@label` lines (Financial PhraseBank), .json [[text, label], ...]
    or a list of {text, label} objects, CSV/TSV/JSONL with `text` and `label` fields."""
    input_file(path, "data file")
    pairs = []
    if path.suffix.lower() == ".txt":
        from genforge.data.readers import detect_encoding

        raw = path.read_bytes().decode(detect_encoding(path), errors="replace")
        for lineno, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                text, at, label = line.rpartition("@")
                if not at or not text.strip():
                    raise DataError(f"{path}:{lineno}: expected `sentence@label`")
                pairs.append((text.strip(), label.strip()))
    elif path.suffix.lower() == ".json" and path.read_text(encoding="utf-8", errors="replace").lstrip()[:2] == "[[":
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(str(row[0]), str(row[1])) for row in data if isinstance(row, list) and len(row) >= 2]
    else:
        for lineno, record in read_records(path):
            if "text" not in record or "label" not in record:
                raise DataError(f"{path}:{lineno}: needs fields 'text' and 'label'")
            pairs.append((str(record["text"]), str(record["label"])))
    pairs = [(t, lab) for t, lab in pairs if t.strip()]
    if not pairs:
        raise DataError(f"{path} holds no labelled texts")
    return pairs


def labelled(specs: list[str], holdout: bool, canonical: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """Every file's pairs with mapped labels; hash bucket 9 left out when `holdout`."""
    rows = []
    for spec in specs:
        path, mapping = parse_spec(spec)
        for text, raw in read_pairs(path):
            label = mapping.get(raw, raw if not mapping else None)
            if label is None:
                raise DataError(f"{path}: label {raw!r} is not in the mapping of {spec!r}")
            if canonical is not None:
                label = label.lower()
                if label not in canonical:
                    raise DataError(f"{path}: label {raw!r} is not one of {', '.join(canonical)}; map it with "
                                    f"{path}#{raw}=negative,...")
            if not (holdout and hash_bucket(text) == 9):
                rows.append((text, label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with atomic_open(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def settings(cfg: MonitorTrainConfig) -> dict[str, Any]:
    """What a resumed training must share with the interrupted one: every setting but --resume."""
    return json.loads(json.dumps({k: v for k, v in to_dict(cfg).items() if k != "resume"}))


def check_resume(cfg: MonitorTrainConfig) -> None:
    """As `finetune --resume` treats a folder: --resume needs an interrupted training with the same settings;
    a new one refuses to mix with an interrupted one (and redoes a finished one). Reads only."""
    path = cfg.out / SETTINGS
    unfinished = path.is_file() and not (cfg.out / MANIFEST).is_file()  # a finished training is not continued
    check_resume_folder(cfg.out, resume=cfg.resume, started=unfinished, marker=SETTINGS)
    if cfg.resume:
        check_same_settings(read_json(path, "delete the folder to train anew, or choose another --out", kind=dict),
                            settings(cfg))


def kept(cfg: MonitorTrainConfig, out: Path) -> bool:
    """On --resume, whether the sub-run in `out` finished before the interruption (and is kept as it is)."""
    if cfg.resume and (out / MANIFEST).is_file():
        print(f"kept: {out} (finished before the interruption)", file=sys.stderr)
        return True
    return False


def classify_config(cfg: MonitorTrainConfig, data: Path, out: Path, resume: bool, chinese: bool = False) -> Any:
    """The `finetune classify` config of one classifier run (the `classify:` mapping on top, and `zh_classify:`
    for the Chinese one); ConfigError for a bad key or value, which `train` asks for before it touches --out, so
    a typo cannot spoil a finished model."""
    from genforge.finetune.config import ClassifyConfig

    given = {**cfg.classify, **(cfg.zh_classify if chinese else {})}
    base = (cfg.out / "zh-base" if cfg.zh_model == "scratch" else Path(cfg.zh_model)) if chinese else cfg.model
    values = {"model": str(base), "data": str(data), "out": str(out), "epochs": cfg.epochs,
              "max_steps": cfg.max_steps, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "lr": cfg.lr,
              "eval_every": cfg.eval_every, "seed": cfg.seed, "select": "accuracy", **given, "resume": resume}
    key = "zh_classify" if chinese else "classify"
    classify = from_dict(ClassifyConfig, values, prefix=f"{key}.")
    try:
        check_needs(classify, given_keys(classify, given))
    except ConfigError as e:  # named as the user wrote it: a key of the `classify:` mapping
        raise ConfigError(f"{key}: {e}") from None
    return classify


def classifier_run(cfg: MonitorTrainConfig, data: Path, out: Path, chinese: bool = False) -> Path:
    from genforge.finetune.classify import classify
    from genforge.finetune.prepared import PREPARED

    if kept(cfg, out):
        return out
    started = (out / "checkpoints").is_dir() or (out / PREPARED).is_file()
    return classify(classify_config(cfg, data, out, cfg.resume and started, chinese))


def sentiment_run(cfg: MonitorTrainConfig, rows: list[tuple[str, str]], name: str, chinese: bool) -> tuple[str, dict]:
    """Train the sentiment classifier OUT/`name` on `rows` (and its compressed copy with --compress): the folder
    name the monitor classifies with, and its validation metrics."""
    run = classifier_run(cfg, write_csv(cfg.out / "data" / f"{name}.csv", rows), cfg.out / name, chinese)
    metrics = {k: v for k, v in read_manifest(run)["metrics"].items() if k in ("val_accuracy", "val_macro_f1")}
    if not cfg.compress:
        return name, metrics
    from genforge.compress.config import CompressConfig
    from genforge.compress.run import compress

    served = f"{name}-{cfg.compress}"
    val = write_csv(cfg.out / "data" / f"{name}_val.csv", [r for r in rows if hash_bucket(r[0]) == 8] or rows[:100])
    if not kept(cfg, cfg.out / served):
        compress(CompressConfig(model=run, method=cfg.compress, eval_data=val, out=cfg.out / served, measure_steps=8))
    return served, metrics


def discover_topics(cfg: MonitorTrainConfig, texts: list[str]) -> dict[str, Any]:
    """Cluster `texts` (the corpus), fit the topic router; write topics.json and the router; return
    topics.json's content."""
    import numpy as np
    from tqdm import tqdm

    from genforge.apps.monitor import topics

    embedder = Path(cfg.embedder or cfg.model).resolve()
    model, tokenizer = topics.load_encoder(embedder)
    with tqdm(total=len(texts), unit="text", desc="embed corpus", file=sys.stderr) as bar:
        vectors = topics.embed(model, tokenizer, texts, seq_len=cfg.seq_len, progress=bar.update)
    centroids, names = topics.discover(vectors, texts, cfg.topics, cfg.seed)
    clusters = topics.assign(vectors, centroids)[0]
    router, agreement = topics.fit_router(texts, clusters, cfg.seed)
    with atomic_open(cfg.out / "topic_router.npz", "wb") as f:
        np.savez(f, idf=router["idf"], coef=router["coef"], intercept=router["intercept"])
    write_json(cfg.out / "topic_vocabulary.json", router["vocabulary"])
    with atomic_open(cfg.out / "centroids.npy", "wb") as f:
        np.save(f, centroids)
    info = {"names": names, "sizes": np.bincount(clusters, minlength=len(names)).tolist(),
            "embedder": str(embedder), "seq_len": cfg.seq_len, "assign": cfg.topic_assign,
            "router_agreement": round(agreement, 4)}
    write_json(cfg.out / "topics.json", info)
    return info


def topic_corpus(cfg: MonitorTrainConfig, rows: list[tuple[str, str]], corpus: list[str]) -> list[str]:
    """The texts topics are discovered in (--corpus, else the sentiment texts), refused before any training
    when too few for --topics clusters of two: k-means would make one-text topics the router cannot learn."""
    texts = corpus or [t for t, _ in rows]
    if len(texts) < 2 * cfg.topics:
        raise ConfigError(f"--topics {cfg.topics} needs at least {2 * cfg.topics} texts to discover topics in; "
                          f"the corpus has {len(texts)}")
    return texts


def train(cfg: MonitorTrainConfig) -> Path:
    """Train the sentiment classifier and the topic model; return the model folder."""
    from rich.console import Console
    from rich.table import Table

    from genforge.finetune.predict import read_texts
    from genforge.models.load import read_model_config

    rows = labelled(cfg.sentiment_data, cfg.holdout, SENTIMENTS)
    parts = {"sentiment": rows}
    if cfg.zh_model:
        parts = {"sentiment": [r for r in rows if not is_chinese(r[0])],
                 "sentiment-zh": [r for r in rows if is_chinese(r[0])]}
    what = {"sentiment": "the sentiment texts that are not Chinese" if cfg.zh_model else "the sentiment data",
            "sentiment-zh": "the Chinese sentiment texts"}
    why = " (--zh-model trains a classifier on the Chinese texts, --model one on the others)" if cfg.zh_model else ""
    for name, part in parts.items():
        if len({lab for _, lab in part}) < 2:
            raise DataError(f"{what[name]}{why}: fewer than two of negative/neutral/positive")
    topic_rows = labelled(cfg.topic_data, cfg.holdout, None) if cfg.topic_data else []
    corpus = [] if cfg.topic_data else topic_corpus(cfg, rows, [t for p in cfg.corpus for t in read_texts(p, "text")])
    read_model_config(cfg.model)
    if cfg.zh_model and cfg.zh_model != "scratch":
        read_model_config(Path(cfg.zh_model))
    if not cfg.topic_data:
        read_model_config(cfg.embedder or cfg.model)
    for name in parts:
        classify_config(cfg, cfg.out / "data" / f"{name}.csv", cfg.out / name, False, name == "sentiment-zh")
    check_resume(cfg)
    started = begin_output(cfg.out, MONITOR_STAGE)  # only now, with the inputs read: a bad one leaves an earlier model whole
    if not cfg.resume:
        write_json(cfg.out / SETTINGS, settings(cfg))
    data_dir = cfg.out / "data"
    data_dir.mkdir(exist_ok=True)
    served, metrics = {}, {}
    for name, part in parts.items():
        chinese = name == "sentiment-zh"
        base = cfg.out / "zh-base"  # renamed into place when whole: with its config.json it is kept on --resume
        if chinese and cfg.zh_model == "scratch" and not (cfg.resume and (base / "config.json").is_file()):
            from genforge.models.presets import fresh_encoder

            fresh_encoder([t for t, _ in part], base, max_positions=512, seed=cfg.seed)
        served[name], run_metrics = sentiment_run(cfg, part, name, chinese)
        metrics.update({f"{name.replace('-', '_')}_{k}": v for k, v in run_metrics.items()})
    if cfg.topic_data:
        classifier_run(cfg, write_csv(data_dir / "topic.csv", topic_rows), cfg.out / "topic")
        topic_model = {"kind": "classifier", "path": "topic"}
        metrics.update({"topic_" + k: v for k, v in read_manifest(cfg.out / "topic")["metrics"].items()
                        if k in ("val_accuracy", "val_macro_f1")})
    else:
        info = discover_topics(cfg, corpus)
        topic_model = {"kind": "discovered", "path": "topics.json"}
        metrics["topics"] = info["names"]
        metrics["topic_router_agreement"] = info["router_agreement"]
    table = Table(title=f"monitor model {cfg.out}")
    table.add_column("metric")
    table.add_column("value")
    for k, v in metrics.items():
        table.add_row(k, ", ".join(v) if isinstance(v, list) else f"{v:.4f}")
    Console(stderr=True).print(table)
    write_manifest(cfg.out, MONITOR_STAGE, cfg, started=started, metrics=metrics,
                   extra={"sentiment": served["sentiment"], "sentiment_zh": served.get("sentiment-zh"),
                          "topic_model": topic_model, "examples": len(rows)})
    return cfg.out
