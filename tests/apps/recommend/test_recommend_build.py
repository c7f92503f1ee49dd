import csv
import json
import random
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import genforge.apps.recommend.build as build_module
from genforge.apps.recommend.build import build, scorer_helps
from genforge.apps.recommend.config import BuildConfig, EvalConfig
from genforge.apps.recommend.data import is_heldout
from genforge.apps.recommend.evaluate import evaluate
from genforge.apps.recommend.recommender import load
from genforge.cli import app

GENRES = {
    "space": ["starship fleet battle", "galactic empire politics", "alien first contact", "space station mystery",
              "asteroid mining crew", "interstellar war saga", "robot pilots in orbit", "colony on mars",
              "time travel spaceship", "space pirates chase"],
    "cooking": ["pasta kitchen rivals", "bakery in paris", "sushi master apprentice", "street food tour",
                "cake contest", "ramen shop family", "grill masters", "farm to table chef", "spice market journey",
                "chocolate factory"],
    "sports": ["high school volleyball", "boxing champion", "baseball summer", "swimming relay team",
               "tennis prodigy", "soccer world cup", "cycling race", "basketball street court", "karate dojo",
               "marathon runners"],
}
COLD = [("c1", "Senate of the Stars", "space opera with senate politics and fleets", "space"),
        ("c2", "Dessert Diaries", "a pastry chef bakes desserts", "cooking")]


def write_data(root):
    items = ["item_id,title,plot,genre"]
    ids = {}
    for genre, plots in GENRES.items():
        ids[genre] = []
        for n, plot in enumerate(plots):
            iid = f"{genre[:3]}{n}"
            ids[genre].append(iid)
            items.append(f"{iid},{plot.title()},{plot},{genre}")
    items += [f"{i},{t},{p},{g}" for i, t, p, g in COLD]
    (root / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    rng = random.Random(0)
    rows = ["user_id,item_id,rating"]
    for u in range(90):
        genre = list(GENRES)[u % 3]
        liked = rng.sample(ids[genre], 7)
        other = rng.choice([i for g, v in ids.items() if g != genre for i in v])
        rows += [f"user{u},{i},{rng.randint(7, 10)}" for i in liked] + [f"user{u},{other},{rng.randint(1, 4)}"]
    (root / "events.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer, save_folder):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=256, type_vocab_size=1, pad_token_id=0)
    return save_folder(BertForMaskedLM(cfg).eval(), tokenizer, tmp_path_factory.mktemp("rec_bert"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, bert_dir):
    root = tmp_path_factory.mktemp("rec")
    write_data(root)
    cfg = BuildConfig(items=root / "items.csv", interactions=[root / "events.csv"], out=root / "model",
                      text_fields=["title", "plot"], genre_field="genre", rating_field="rating",
                      scorer_model=bert_dir, scorer_users=30, scorer_steps=2, scorer_batch_size=8, seq_len=64,
                      ranker_users=60, candidates=12, rerank=6, neighbours=10)
    build(cfg)
    return root


def test_build_folder(built):
    out = built / "model"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "app.recommend.build" and manifest["metrics"]["items"] == 32
    assert manifest["metrics"]["dropped_interactions"] == 0
    assert 0 <= manifest["metrics"]["val_ndcg@10_fast"] <= 1 and 0 <= manifest["metrics"]["val_ndcg@10_full"] <= 1
    for name in ("items.jsonl", "embeddings.npy", "index.faiss", "behaviour.npz", "ranker_fast.txt", "ranker.txt",
                 "scorer/classifier.json"):
        assert (out / name).is_file(), name
    assert not (out / "scorer" / "checkpoints").exists()
    info = json.loads((out / "recommend.json").read_text())
    assert info["use_scorer"] is manifest["metrics"]["use_scorer"]
    default = load(out)
    assert default.use_scorer is info["use_scorer"]  # the default path is the build's validated choice
    assert (default.scorer is not None) == info["use_scorer"]  # an unused scorer is not loaded
    assert load(out, scorer=True).use_scorer and load(out, scorer=False).scorer is None


def test_scorer_is_used_only_for_a_gain_beyond_its_noise():
    rng = np.random.default_rng(0)
    assert scorer_helps(0.05 + 0.1 * rng.standard_normal(200))
    assert not scorer_helps(0.1 * rng.standard_normal(200) - 0.001)
    assert not scorer_helps(np.zeros(50))  # no change at all: a forward pass per candidate for nothing
    assert scorer_helps(np.array([0.2])) and not scorer_helps(np.array([0.0]))


def test_known_user_gets_unseen_items_of_their_taste_with_reasons(built):
    model = load(built / "model", scorer=True)
    q = model.query_for_user("user0")  # a space fan
    seen = {model.items.ids[i] for i in q.history}
    rows = model.recommend(q, 5)
    assert len(rows) == 5 and not seen & {r["item"] for r in rows}
    assert sum(r["item"].startswith("spa") or r["item"] == "c1" for r in rows) >= 3
    assert all(r["explanation"].startswith("because you liked") for r in rows)
    assert all(r["interest"] is not None for r in rows)  # the scorer re-ranked them
    fast = model.recommend(model.query_for_user("user0"), 5, use_scorer=False)
    assert all(r["interest"] is None for r in fast)


def test_a_holdout_build_serves_users_on_everything_they_did(built):
    """`recommend`/`serve` load the default --holdout build: a user's held-out interactions are still theirs,
    never recommended back, while evaluation's queries keep to the training fold."""
    model = load(built / "model", scorer=False)
    seen = {}
    with open(built / "events.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            seen.setdefault(row["user_id"], set()).add(row["item_id"])
    for user, items in seen.items():
        q = model.query_for_user(user)
        assert items.isdisjoint(r["item"] for r in model.recommend(q, 5)), user
        assert {model.items.ids[i] for i in q.history} == items
        fitted = model.query_for_user(user, fitted_only=True)
        assert {model.items.ids[i] for i in fitted.history} == {i for i in items if not is_heldout(user, i)}


def test_candidates_only_from_what_the_behaviour_says(built):
    """A liked item nobody else used has no co-occurrence and a zero MF factor: its candidates are the nearest
    items to it, not arbitrary zero-score items in catalogue order."""
    model = load(built / "model", scorer=False)
    q = model.query_for_items(["c2"])
    sig = model.signals(q)
    _, nearest = model.index.search(sig["profile"][None, :].astype(np.float32), len(model.items.ids))
    ann = [int(i) for i in nearest[0] if i not in q.exclude][:model.candidates]
    assert model.candidate_items(q, sig, None).tolist() == ann
    q = model.query_for_user("user0")
    sig = model.signals(q)
    sig["cooc"][sig["cooc"] > 0] = 0  # no co-occurrence: no co-occurrence list, the other two fill the candidates
    sig["mf"][:] = 0
    cands = model.candidate_items(q, sig, None).tolist()
    _, nearest = model.index.search(sig["profile"][None, :].astype(np.float32), len(model.items.ids))
    assert cands == [int(i) for i in nearest[0] if i not in q.exclude][:model.candidates]


def test_scorer_and_ranker_users_are_disjoint_when_the_scorer_asks_for_all(tmp_path, bert_dir, monkeypatch):
    """--scorer-users (1500 by default) above the eligible users: the rankers, and the validation that decides
    use_scorer, must still get users whose pairs the scorer did not memorise."""
    seen, real = {}, {name: getattr(build_module, name) for name in ("scorer_rows", "training_rows")}
    for name in real:
        def spy(model, users, *args, _name=name):
            seen[_name] = list(users)
            return real[_name](model, users, *args)

        monkeypatch.setattr(build_module, name, spy)
    write_data(tmp_path)
    build(BuildConfig(items=tmp_path / "items.csv", interactions=[tmp_path / "events.csv"], out=tmp_path / "model",
                      text_fields=["title", "plot"], genre_field="genre", rating_field="rating",
                      scorer_model=bert_dir, scorer_steps=2, scorer_batch_size=8, seq_len=64, ranker_users=60,
                      candidates=12, rerank=6, neighbours=10))
    assert seen["scorer_rows"] and seen["training_rows"]
    assert not set(seen["scorer_rows"]) & set(seen["training_rows"])
    metrics = json.loads((tmp_path / "model" / "manifest.json").read_text())["metrics"]
    assert "val_ndcg@10_full" in metrics  # enough ranker users were left to validate the scorer on


def test_cold_start_user_from_items_and_text_and_new_item(built):
    model = load(built / "model")
    rows = model.recommend(model.query_for_items(["coo0", "coo1"]), 5)
    assert sum(r["item"].startswith("coo") or r["item"] == "c2" for r in rows) >= 4
    assert {"coo0", "coo1"}.isdisjoint(r["item"] for r in rows)
    assert model.behaviour.popularity[model.item_index["c1"]] == 0  # never interacted with
    rows = model.recommend(model.query_for_text("space opera about senate politics"), 3)
    assert "c1" in [r["item"] for r in rows]  # a new item is recommendable from its text alone
    assert any("space" in r["explanation"] or "politics" in r["explanation"] for r in rows)
    rows = model.recommend(model.query_for_text("space"), 5, genres=["cooking"])
    assert rows and all("cooking" in model.items.genres[model.item_index[r["item"]]] for r in rows)


def test_eval_reports_every_method(built, tmp_path):
    report = evaluate(EvalConfig(model=built / "model", out=tmp_path / "eval", k=5, latency_users=3))
    assert set(report["methods"]) == {"genforge-lm", "genforge-fast", "popular", "tfidf", "itemknn", "als"}
    assert report["default"] == ("genforge-lm" if load(built / "model").use_scorer else "genforge-fast")
    for m in report["methods"].values():
        assert 0 <= m["recall@5"] <= 1 and 0 <= m["ndcg@5"] <= 1 and 0 <= m["coverage"] <= 1
    # a taste-structured toy: knowing the user's genre must beat global popularity
    assert report["methods"][report["default"]]["ndcg@5"] > report["methods"]["popular"]["ndcg@5"]
    assert (tmp_path / "eval" / "report.md").is_file() and (tmp_path / "eval" / "metrics.png").is_file()
    lat = report["latency_ms"]
    assert None not in (lat["p95"], lat["lm_p95"], lat["fast_p95"])
    assert lat["p95"] == lat["lm_p95" if report["default"] == "genforge-lm" else "fast_p95"]


def test_eval_finds_the_inputs_of_a_build_made_with_relative_paths_from_anywhere(built, tmp_path, monkeypatch):
    """The manifest named the inputs as given (relative), so eval from another directory died with
    "data file items.csv does not exist"."""
    from pathlib import Path

    monkeypatch.chdir(built)
    model = tmp_path / "model"
    build(BuildConfig(items=Path("items.csv"), interactions=[Path("events.csv")], out=model, scorer=False,
                      text_fields=["title", "plot"], genre_field="genre", rating_field="rating", ranker_users=60,
                      candidates=12, neighbours=10))
    monkeypatch.chdir(tmp_path)
    report = evaluate(EvalConfig(model=model, out=tmp_path / "eval", k=5, baselines=["popular"], latency_users=1))
    assert report["methods"]["genforge-fast"]["recall@5"] >= 0
    manifest = json.loads((model / "manifest.json").read_text())  # a build that recorded relative paths
    manifest["config"]["items"] = "items.csv"
    (model / "manifest.json").write_text(json.dumps(manifest))
    old = CliRunner().invoke(app, ["app", "recommend", "eval", "--model", str(model), "--out", str(tmp_path / "e2")])
    assert old.exit_code == 2 and "items.csv, an input of the build" in old.output and "run eval where" in old.output
    assert not (tmp_path / "e2").exists()  # refused before the output folder is touched


def test_cli_recommend_and_one_line_errors(built):
    runner = CliRunner()
    ok = runner.invoke(app, ["app", "recommend", "recommend", "--model", str(built / "model"), "--like",
                             "volleyball and tennis", "--k", "3", "--no-scorer"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["app", "recommend", "recommend", "--model", str(built / "model"), "--user", "nobody"])
    assert bad.exit_code == 2 and "unknown user 'nobody'" in bad.output and "Traceback" not in bad.output
    genre = runner.invoke(app, ["app", "recommend", "recommend", "--model", str(built / "model"), "--user", "user1",
                                "--genre", "no-such-genre", "--no-scorer"])  # was an empty table, exit 0
    assert genre.exit_code == 2 and "no item has the genre(s) 'no-such-genre'" in genre.output
    both = runner.invoke(app, ["app", "recommend", "recommend", "--model", str(built / "model"), "--user", "user1",
                               "--like", "x"])
    assert both.exit_code == 2 and "exactly one of" in both.output
    missing = runner.invoke(app, ["app", "recommend", "build", "--items", str(built / "items.csv"), "--interactions",
                                  str(built / "events.csv"), "--out", str(built / "x"), "--item-id-field", "sku"])
    assert missing.exit_code == 2 and "no field 'sku'" in missing.output
    noeval = runner.invoke(app, ["app", "recommend", "eval", "--model", str(built), "--out", str(built / "e")])
    assert noeval.exit_code == 2 and "manifest" in noeval.output


BUILD_FILES = ["recommend.json", "users.json", "all_users.json", "items.jsonl", "embeddings.npy", "behaviour.npz",
               "index.faiss", "ranker_fast.txt"]


@pytest.mark.parametrize("name", BUILD_FILES)
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_build_file_is_one_line_naming_it(built, tmp_path, name, damage):
    model = tmp_path / "model"
    shutil.copytree(built / "model", model, ignore=shutil.ignore_patterns("scorer"))
    path = model / name
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3] or b"{")
    result = CliRunner().invoke(app, ["app", "recommend", "recommend", "--model", str(model), "--user", "user0",
                                      "--no-scorer"])
    assert result.exit_code == 2, result.output
    assert f"{path} is {'missing' if damage == 'missing' else 'corrupt'}" in result.output
    assert "genforge app recommend build" in result.output and "Traceback" not in result.output


def test_build_refuses_a_reuse_folder_or_encoder_that_does_not_exist(built, tmp_path):
    common = ["app", "recommend", "build", "--items", str(built / "items.csv"), "--interactions",
              str(built / "events.csv"), "--out", str(tmp_path / "o"), "--text-fields", "title"]
    reuse = CliRunner().invoke(app, [*common, "--reuse", str(tmp_path / "nope")])
    assert reuse.exit_code == 2 and f"{tmp_path / 'nope'} does not exist" in reuse.output, reuse.output
    encoder = CliRunner().invoke(app, [*common, "--encoder", str(tmp_path / "nope")])
    assert encoder.exit_code == 2 and "--encoder" in encoder.output and "does not exist" in encoder.output
    assert "huggingface" not in encoder.output.lower()
    both = CliRunner().invoke(app, [*common, "--reuse", str(built / "model"), "--tune-encoder"])
    assert both.exit_code == 2 and "drop one" in both.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_rebuild_in_place_reuses_the_embeddings(built, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(built / "model", model)
    before = np.load(model / "embeddings.npy")
    build(BuildConfig(items=built / "items.csv", interactions=[built / "events.csv"], out=model, reuse=model,
                      text_fields=["title", "plot"], genre_field="genre", rating_field="rating", scorer=False,
                      ranker_users=60, candidates=12, neighbours=10))
    assert f"reusing the item embeddings of {model}" in capsys.readouterr().out
    assert np.array_equal(np.load(model / "embeddings.npy"), before)
    # the earlier build's scorer and full ranker are gone: `--scorer` used to load them beside the new fast ranker
    assert not (model / "scorer").exists() and not (model / "ranker.txt").exists()
    assert load(model, scorer=True).scorer is None


def test_a_cut_ranker_of_a_build_without_checksums_is_one_line(built, tmp_path):
    """Builds before the sha256 record: a ranker cut mid-trees made LightGBM abort or drop the later trees."""
    model = tmp_path / "model"
    shutil.copytree(built / "model", model, ignore=shutil.ignore_patterns("scorer"))
    info = json.loads((model / "recommend.json").read_text())
    del info["sha256"]
    (model / "recommend.json").write_text(json.dumps(info))
    assert load(model, scorer=False).fast_ranker is not None  # an intact old build still loads
    ranker = model / "ranker_fast.txt"
    ranker.write_bytes(ranker.read_bytes()[:ranker.read_bytes().index(b"end of trees") - 10])
    result = CliRunner().invoke(app, ["app", "recommend", "recommend", "--model", str(model), "--user", "user0",
                                      "--no-scorer"])
    assert result.exit_code == 2 and f"{ranker} is corrupt" in result.output and "cut short" in result.output
    assert "Traceback" not in result.output
