import random

import httpx
import pytest

from genforge.apps.recommend.build import build
from genforge.apps.recommend.config import BuildConfig, RecServeConfig
from genforge.apps.recommend.serve import create_recommend_app

TOPICS = {"space": ["starship battle", "galactic politics", "alien contact", "orbital station", "mars colony",
                    "asteroid miners"],
          "food": ["pasta rivals", "paris bakery", "sushi apprentice", "ramen family", "cake contest", "spice market"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec_serve")
    items = ["id,name,tags"] + [f"{t}{n},{title.title()},{t}" for t, titles in TOPICS.items()
                                for n, title in enumerate(titles)]
    (root / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    rng = random.Random(1)
    rows = ["user,item"]
    for u in range(40):
        topic = list(TOPICS)[u % 2]
        rows += [f"u{u},{topic}{n}" for n in rng.sample(range(6), 4)]
    (root / "events.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return build(BuildConfig(items=root / "items.csv", interactions=[root / "events.csv"], out=root / "model",
                             item_id_field="id", text_fields=["name", "tags"], genre_field="tags", user_field="user",
                             item_field="item", scorer=False, ranker_users=30, candidates=10, neighbours=5))


def test_recommend_route_feedback_and_ab(model_dir, tmp_path, live):
    cfg = RecServeConfig(model=model_dir, name="rec", variant=[f"other={model_dir}:0.5"], api_key="sesame",
                         db=f"sqlite:///{tmp_path / 'serve.db'}")
    with live(create_recommend_app(cfg)) as (url, _):
        client = httpx.Client(base_url=url, timeout=60)
        auth = {"Authorization": "Bearer sesame"}
        assert client.post("/v1/recommend", json={"user": "u0", "k": 3}).status_code == 401

        first = client.post("/v1/recommend", json={"user": "u0", "k": 2}, headers=auth).json()
        assert first["id"].startswith("rec-") and first["model"] == "rec" and len(first["data"]) == 2
        assert all(row["item"].startswith("space") and row["explanation"] for row in first["data"])
        again = client.post("/v1/recommend", json={"user": "u0", "k": 2}, headers=auth).json()
        assert again["variant"] == first["variant"]  # sticky assignment per user

        text = client.post("/v1/recommend", json={"text": "bakery and cake", "k": 2,
                                                  "filters": {"genres": ["food"]}}, headers=auth).json()
        assert [r["item"][:4] for r in text["data"]] == ["food", "food"]
        liked = client.post("/v1/recommend", json={"items": ["space0"], "k": 2, "filters": {"exclude": ["space1"]}},
                            headers=auth).json()
        assert {"space0", "space1"}.isdisjoint(r["item"] for r in liked["data"])

        for body, status in [({"user": "u0", "text": "x"}, 400), ({"user": "nobody"}, 404), ({"items": ["zz"]}, 404),
                             ({"user": "u0", "k": 0}, 400), ({"user": "u0", "model": "nope"}, 404)]:
            r = client.post("/v1/recommend", json=body, headers=auth)
            assert r.status_code == status, (body, r.text)
            assert "error" in r.json()

        fb = client.post("/v1/feedback", json={"response_id": first["id"], "thumbs": "up"}, headers=auth)
        assert fb.status_code == 200 and fb.json()["response_id"] == first["id"]
        for u in range(1, 12):
            rid = client.post("/v1/recommend", json={"user": f"u{u}"}, headers=auth).json()["id"]
            client.post("/v1/feedback", json={"response_id": rid, "rating": 5 if u % 2 else 2}, headers=auth)
        report = client.get("/v1/ab/report", params={"model": "rec"}, headers=auth).json()
        arms = {v["variant"]: v for v in report["variants"]}
        assert set(arms) == {"rec", "other"}
        assert sum(v["impressions"] for v in arms.values()) == 15  # 4 above + 11 in the loop; refused requests are not stored
        assert sum(v["feedback"] for v in arms.values()) == 12


def test_recommend_errors_name_the_bad_field(model_dir, tmp_path, live):
    """A misspelt filter is a 400 (not an unfiltered answer); errors name the field and the served models once."""
    cfg = RecServeConfig(model=model_dir, name="rec", api_key="sesame", db=f"sqlite:///{tmp_path / 'serve.db'}")
    with live(create_recommend_app(cfg)) as (url, _):
        client = httpx.Client(base_url=url, timeout=60, headers={"Authorization": "Bearer sesame"})
        typo = client.post("/v1/recommend", json={"user": "u0", "filters": {"genre": ["food"]}})
        assert typo.status_code == 400 and "genre" in typo.text
        assert client.post("/v1/recommend", json={"user": "u0", "filter": {"genres": ["food"]}}).status_code == 400
        empty = client.post("/v1/recommend", json={"text": " "})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "text"
        as_text = client.post("/v1/recommend", json={"user": "u0", "k": "5"})  # not read as 5
        assert as_text.status_code == 400 and as_text.json()["error"]["param"] == "k"
        nope = client.post("/v1/recommend", json={"user": "u0", "model": "nope"}).json()["error"]["message"]
        assert nope.endswith("(served: rec)")
        chat = client.post("/v1/chat/completions", json={"model": "rec", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 404 and chat.json()["error"]["message"].endswith("serves no language model)")
        # a genre no item has filtered every item out: a 200 with no data and no word why
        misspelt = client.post("/v1/recommend", json={"user": "u0", "filters": {"genres": ["fod"]}})
        assert misspelt.status_code == 400 and misspelt.json()["error"]["param"] == "filters.genres"
        assert misspelt.json()["error"]["message"] == "no item has the genre(s) 'fod' (genres: food, space)"


def test_ids_with_leading_zeros_find_what_the_build_read(tmp_path):
    """The build reads "0003" as item 3 (catalogues and logs disagree on padding); queries must too."""
    from genforge.apps.recommend.recommender import load

    titles = [t for ts in TOPICS.values() for t in ts]
    items = ["id,name,tags"] + [f"{n + 1},{t.title()},{'space' if n < 6 else 'food'}" for n, t in enumerate(titles)]
    (tmp_path / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    rng = random.Random(1)
    rows = ["user,item"] + [f"{u},{(u % 2) * 6 + n + 1}" for u in range(1, 41) for n in rng.sample(range(6), 4)]
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    model = load(build(BuildConfig(items=tmp_path / "items.csv", interactions=[tmp_path / "events.csv"],
                                   out=tmp_path / "model", item_id_field="id", text_fields=["name", "tags"],
                                   user_field="user", item_field="item", scorer=False, ranker_users=30,
                                   candidates=10, neighbours=5)))
    assert model.recommend(model.query_for_user("007"), 3) == model.recommend(model.query_for_user("7"), 3)
    liked = model.recommend(model.query_for_items(["0001"]), 3, exclude=["0002"])
    assert liked and {"1", "2"}.isdisjoint(r["item"] for r in liked)
