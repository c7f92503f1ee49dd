"""`genforge app monitor train`: sentiment through `finetune classify`, topics discovered or from labels,
label mappings of the real data sets' formats, and one-line errors for bad input."""

import json
import shutil
import subprocess
import sys

import pytest

from genforge.apps.monitor.model import load_monitor_model
from genforge.apps.monitor.topics import discover, fit_router, keywords, load_router, words
from genforge.apps.monitor.train import labelled, parse_spec, read_pairs, train
from genforge.artifacts import read_manifest
from genforge.errors import ArtifactError, ConfigError, DataError, Stopped


def test_train_discovers_topics_and_the_model_classifies(monitor_model, loaded_model):
    manifest = read_manifest(monitor_model, stage="app.monitor.model")
    assert manifest["topic_model"] == {"kind": "discovered", "path": "topics.json"}
    assert 0 <= manifest["metrics"]["topic_router_agreement"] <= 1
    topics = json.loads((monitor_model / "topics.json").read_text())
    assert len(topics["names"]) == 3 == len(set(topics["names"])) and sum(topics["sizes"]) > 0
    assert read_manifest(monitor_model / "sentiment", stage="finetune")["stage"] == "finetune"
    out = loaded_model.classify(["shares jump after record profit", "bank cuts jobs"])
    assert [set(r) for r in out] == [{"sentiment", "confidence", "probs", "topic", "topic_score"}] * 2
    assert all(r["sentiment"] in ("negative", "neutral", "positive") and r["topic"] in topics["names"] for r in out)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in out)


def test_train_with_topic_labels_makes_a_topic_classifier(tmp_path, bert_dir, sentiment_csv, train_cfg):
    topic_csv = tmp_path / "topics.csv"
    topic_csv.write_text("text,label\n" + "".join(f"bank loan rates {i},banking\nchip factory orders {i},tech\n"
                                                  for i in range(10)), encoding="utf-8")
    folder = train(train_cfg(bert_dir, [str(sentiment_csv)], tmp_path / "m", topic_data=[str(topic_csv)]))
    assert read_manifest(folder)["topic_model"]["kind"] == "classifier"
    out = load_monitor_model(folder).classify(["bank loan rates rise"])
    assert out[0]["topic"] in ("banking", "tech")


def test_real_formats_and_label_mappings(shared_data):
    pb = read_pairs(shared_data / "financial_phrasebank" / "Sentences_50Agree.txt")
    assert len(pb) == 4846 and {lab for _, lab in pb} == {"negative", "neutral", "positive"}
    finfe = read_pairs(shared_data / "bbt_fincuge_finfe" / "eval_list.json")
    assert len(finfe) == 2020 and any("\u4e00" <= ch <= "\u9fff" for ch in finfe[0][0])
    spec = f"{shared_data}/twitter_financial_news_sentiment/sent_valid.csv#0=negative,1=positive,2=neutral"
    assert parse_spec(spec)[1] == {"0": "negative", "1": "positive", "2": "neutral"}
    rows = labelled([spec], holdout=True, canonical=("negative", "neutral", "positive"))
    assert 0.85 * 2388 < len(rows) < 0.95 * 2388  # hash bucket 9 held out
    with pytest.raises(DataError, match="not one of negative"):
        labelled([f"{shared_data}/twitter_financial_news_sentiment/sent_valid.csv"], True,
                 ("negative", "neutral", "positive"))
    with pytest.raises(ConfigError, match="RAW=LABEL"):
        parse_spec("x.csv#0negative")


def test_topic_keywords_are_particular_to_their_cluster():
    import numpy as np

    texts = ["bank loan rates", "bank deposit rates", "chip factory orders", "chip wafer orders"]
    names = keywords(texts, np.array([0, 0, 1, 1]), 2)
    assert names[0][0] == "bank" and names[1][0] in ("chip", "orders")
    assert words("银行利率 上调 https://t.co/x Bank $AAPL") == ["银行", "行利", "利率", "上调", "bank", "$aapl"]
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]] + 0.01
    centroids, topic_names = discover(vectors, texts, 2)
    assert centroids.shape == (2, 4) and len(set(topic_names)) == 2


def test_topic_router_learns_the_clusters():
    import numpy as np

    texts = [f"bank loan rates deposit {i}" for i in range(30)] + [f"chip wafer factory orders {i}" for i in range(30)]
    clusters = np.array([0] * 30 + [1] * 30)
    params, agreement = fit_router(texts, clusters)
    route = load_router(params["vocabulary"], params["idf"], params["coef"], params["intercept"])
    best, prob = route(["deposit rates at the bank", "wafer orders at the chip factory"])
    assert best.tolist() == [0, 1] and (prob > 0.5).all() and agreement == 1.0


def test_cli_errors_are_one_line(tmp_path, bert_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nsome news,maybe\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "genforge.cli", "app", "monitor", "train", "--model", str(bert_dir),
                        "--sentiment-data", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not one of negative" in r.stderr
    r = subprocess.run([sys.executable, "-m", "genforge.cli", "app", "monitor", "run", "--model", str(tmp_path),
                        "--source", "kafka:x"], capture_output=True, text=True)
    assert r.returncode == 2 and "--source must be" in r.stderr and r.stderr.count("\n") == 1


def test_compressed_sentiment_model_and_encoder_topics(tmp_path, bert_dir, sentiment_csv, train_cfg):
    folder = train(train_cfg(bert_dir, [str(sentiment_csv)], tmp_path / "m", compress="int8", topic_assign="encoder"))
    assert read_manifest(folder)["sentiment"] == "sentiment-int8"
    assert read_manifest(folder / "sentiment-int8")["stage"] != "finetune"
    model = load_monitor_model(folder)
    assert model.router is None and model.centroids.shape[0] == 3  # topics by nearest centroid
    out = model.classify(["shares jump", "bank cuts jobs"])
    names = json.loads((folder / "topics.json").read_text())["names"]
    assert [r["sentiment"] in ("negative", "neutral", "positive") and r["topic"] in names for r in out] == [True] * 2


def test_chinese_texts_get_a_classifier_of_their_own_on_a_scratch_base(tmp_path, bert_dir, sentiment_csv, train_cfg):
    """--zh-model scratch: the Chinese texts train OUT/sentiment-zh/ on a fresh BERT over their own BPE (MiniLM's
    vocabulary lacks most Chinese characters), the others OUT/sentiment/; run time routes each text by script.
    With --compress both are compressed, and the monitor serves the copies."""
    from genforge.finetune.classifier import predict_probs

    zh_news = {"negative": "股价大跌 亏损严重", "neutral": "公司将于周一召开董事会", "positive": "业绩大涨 创新高"}
    zh_csv = tmp_path / "zh.csv"
    zh_csv.write_text("text,label\n" + "".join(f"{t}{i},{lab}\n" for lab, t in zh_news.items() for i in range(8)),
                      encoding="utf-8")
    folder = train(train_cfg(bert_dir, [str(sentiment_csv), str(zh_csv)], tmp_path / "m", zh_model="scratch",
                             zh_classify={"lr": 1e-3}, compress="int8"))
    manifest = read_manifest(folder)
    assert manifest["sentiment_zh"] == "sentiment-zh-int8" and "sentiment_zh_val_accuracy" in manifest["metrics"]
    assert manifest["sentiment"] == "sentiment-int8"
    assert read_manifest(folder / "sentiment-zh-int8")["parent"]["stage"] == "finetune"
    assert (folder / "zh-base" / "config.json").is_file()
    assert read_manifest(folder / "sentiment-zh")["config"]["lr"] == 1e-3
    assert "股价" in (folder / "data" / "sentiment-zh.csv").read_text(encoding="utf-8")
    assert "股价" not in (folder / "data" / "sentiment.csv").read_text(encoding="utf-8")
    model = load_monitor_model(folder)
    texts = ["shares jump after record profit", "AAPL 股价大跌", "bank cuts jobs"]
    out = model.classify(texts)
    for (clf, tok, info), i in ((model.sentiment, 0), (model.sentiment_zh, 1), (model.sentiment, 2)):
        direct = predict_probs(clf, tok, [texts[i]], seq_len=info["seq_len"], multi_label=False)[0]
        assert [out[i]["probs"][lab] for lab in info["labels"]] == pytest.approx(direct.tolist(), abs=1e-4)
    clf, tok, info = model.sentiment  # the English classifier would have said otherwise
    english = predict_probs(clf, tok, [texts[1]], seq_len=info["seq_len"], multi_label=False)[0]
    assert [out[1]["probs"][lab] for lab in info["labels"]] != pytest.approx(english.tolist(), abs=1e-3)
    with pytest.raises(DataError, match="Chinese sentiment texts"):
        train(train_cfg(bert_dir, [str(sentiment_csv)], tmp_path / "m2", zh_model="scratch"))
    with pytest.raises(ConfigError, match="zh_classify"):
        train_cfg(bert_dir, [str(sentiment_csv)], tmp_path / "m3", zh_classify={"lr": 1e-3}).check()


def test_a_text_is_chinese_when_its_characters_outweigh_its_latin_words():
    from genforge.apps.monitor.train import is_chinese

    assert is_chinese("AAPL 跌停") and is_chinese("紫金矿业也是，40个点的前一天清了仓")
    assert not is_chinese("Tesla stock falls 5% today 哈") and not is_chinese("shares jump") and not is_chinese("")


@pytest.mark.parametrize("name,content", [("topics.json", b"{\"names\": ["), ("topics.json", b"[]"),
                                          ("topic_vocabulary.json", b"[1, 2]"), ("topic_router.npz", b"PK\x03\x04"),
                                          ("topic_router.npz", None)])
def test_a_damaged_topic_file_is_one_line_naming_it(tmp_path, monitor_model, name, content):
    folder = tmp_path / "model"
    shutil.copytree(monitor_model, folder)
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(content)
    with pytest.raises(ArtifactError, match=f"{name} is (corrupt|missing).*genforge app monitor train"):
        load_monitor_model(folder)


@pytest.mark.parametrize("bad", ["missing sentiment data", "empty corpus", "classify key typo", "classify value",
                                 "classify moot key"])
def test_a_rerun_on_bad_input_keeps_the_earlier_model(tmp_path, monitor_model, bert_dir, sentiment_csv, train_cfg, bad):
    """A bad input or a bad `classify:` setting is refused before --out is touched: the finished model stays
    finished (a rerun with good settings is not refused as "an unfinished run")."""
    folder = shutil.copytree(monitor_model, tmp_path / "model")
    finished = read_manifest(folder, stage="app.monitor.model")
    empty_corpus = tmp_path / "corpus.txt"
    empty_corpus.write_text("\n", encoding="utf-8")
    change, error, message = {
        "missing sentiment data": ({"data": [str(tmp_path / "gone.csv")]}, DataError, "gone.csv does not exist"),
        "empty corpus": ({"corpus": [empty_corpus]}, DataError, "corpus.txt holds no texts"),
        "classify key typo": ({"classify": {"warmup_stepz": 1}}, ConfigError, "unknown config key 'classify.warmup_stepz'"),
        "classify value": ({"classify": {"lr": -1.0}}, ConfigError, "--lr must be in"),
        "classify moot key": ({"classify": {"adv_epsilon": 0.5}}, ConfigError,
                              "classify: --adv-epsilon has no effect without --adversarial"),
    }[bad]
    settings = {"base": bert_dir, "data": [str(sentiment_csv)], "out": folder, **change}
    with pytest.raises(error, match=message):
        train(train_cfg(**settings))
    assert read_manifest(folder, stage="app.monitor.model") == finished
    assert json.loads((folder / "train_settings.json").read_text()) == json.loads(
        (monitor_model / "train_settings.json").read_text())


def test_more_topics_than_the_corpus_can_hold_is_refused_before_training(tmp_path, bert_dir, sentiment_csv, train_cfg):
    """--topics beyond half the corpus would give one-text topics (router agreement 0): refused, nothing written."""
    out = tmp_path / "model"
    with pytest.raises(ConfigError, match="--topics 100000 needs at least 200000 texts"):
        train(train_cfg(bert_dir, [str(sentiment_csv)], out, topics=100000))
    assert not out.exists()


def test_an_interrupted_training_resumes_keeping_the_classifier_it_finished(tmp_path, bert_dir, sentiment_csv,
                                                                             train_cfg, counted):
    import dataclasses

    from genforge.finetune import classify

    topic_csv = tmp_path / "topics.csv"
    topic_csv.write_text("text,label\n" + "".join(f"bank loan rates {i},banking\nchip factory orders {i},tech\n"
                                                  for i in range(10)), encoding="utf-8")
    out = tmp_path / "m"
    cfg = train_cfg(bert_dir, [str(sentiment_csv)], out, topic_data=[str(topic_csv)])
    trainings = counted(classify, "train")
    trainings.stop_at = 2  # killed as the topic classifier starts training
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert (out / "sentiment" / "manifest.json").is_file() and not (out / "manifest.json").exists()
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume to continue it"):
        train(cfg)
    with pytest.raises(ConfigError, match="--resume: lr 0.001 differs from the interrupted run's 5e-05"):
        train(dataclasses.replace(cfg, resume=True, lr=1e-3))
    sentiment = (out / "sentiment" / "model.safetensors").read_bytes()
    trainings.count, trainings.stop_at = 0, None

    train(dataclasses.replace(cfg, resume=True))
    assert trainings.count == 1  # the topic classifier only: the finished sentiment one was kept
    assert (out / "sentiment" / "model.safetensors").read_bytes() == sentiment
    assert read_manifest(out)["topic_model"]["kind"] == "classifier"
    with pytest.raises(ArtifactError, match="nothing to resume"):
        train(dataclasses.replace(cfg, resume=True))


def test_a_recipe_rerun_resumes_its_interrupted_monitor_training(tmp_path, bert_dir, sentiment_csv, counted, capsys):
    from genforge.config import load_config
    from genforge.finetune import classify
    from genforge.recipes import RunConfig, run_recipe

    recipe = tmp_path / "monitor.yaml"
    recipe.write_text(f"""steps:
  - stage: app.monitor.train
    name: model
    model: {bert_dir}
    sentiment_data: [{sentiment_csv}]
    topics: 3
    epochs: 0
    max_steps: 2
    batch_size: 8
    seq_len: 32
    eval_every: 2
    classify: {{warmup_steps: 1, bf16: false}}
""", encoding="utf-8")
    trainings = counted(classify, "train")
    trainings.stop_at = 1  # killed as the sentiment classifier starts training
    with pytest.raises(Stopped, match="step 'model' stopped: .* continues"):  # the recipe's advice, not the step's
        run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": tmp_path / "run"}))
    trainings.stop_at = None
    run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": tmp_path / "run"}))
    assert f"resuming the unfinished run in {tmp_path / 'run' / 'model'}" in capsys.readouterr().out
    assert read_manifest(tmp_path / "run" / "model")["stage"] == "app.monitor.model"
