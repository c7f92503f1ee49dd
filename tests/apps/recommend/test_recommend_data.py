import json

import pytest

from genforge.apps.recommend.data import is_heldout, norm_id, read_interactions, read_items, split
from genforge.errors import DataError


def test_items_from_tsv_dat_with_entities(tmp_path):
    path = tmp_path / "items.dat"
    path.write_text("id\tname\tgenre\n007\tSteins&#039;Gate\tSci-Fi, Thriller\n8\tK-On!\tMusic|School\n",
                    encoding="utf-8")
    items = read_items(path, "id", ["name", "genre"], genre_field="genre")
    assert items.ids == ["7", "8"]
    assert items.titles[0] == "Steins'Gate" and items.texts[0] == "Steins'Gate. Sci-Fi, Thriller"
    assert items.genres == [["sci-fi", "thriller"], ["music", "school"]]


def test_items_jsonl_and_csv_latin1(tmp_path):
    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps({"sku": s, "title": t}) for s, t in [("a1", "Red shoe"), ("a2", "Blue hat")]),
                  encoding="utf-8")
    assert read_items(jl, "sku", ["title"]).ids == ["a1", "a2"]
    csv = tmp_path / "items.csv"
    csv.write_bytes("item_id,title\n1,Caf\xe9 noir\n".encode("latin-1"))
    assert read_items(csv, "item_id", ["title"]).texts == ["Café noir"]


def test_bad_fields_are_one_line_errors(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\n1,\n", encoding="utf-8")
    with pytest.raises(DataError, match="no text"):
        read_items(path, "item_id", ["title"])
    with pytest.raises(DataError, match="no field 'name'"):
        read_items(path, "item_id", ["name"])
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,rating\nu1,1,five\n", encoding="utf-8")
    with pytest.raises(DataError, match="must be a number"):
        read_interactions([events], "user_id", "item_id", "rating")
    with pytest.raises(DataError, match="names an item of the catalogue"):
        read_interactions([events], "user_id", "item_id", known_items={"2"})


def test_interactions_later_rows_win_and_unknown_items_drop(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("u,i,r,t\n1,10,3,100\n1,11,4,101\n2,99,5,102\n", encoding="utf-8")
    b.write_text("u,i,r,t\n1,010,9,200\n", encoding="utf-8")
    data = read_interactions([a, b], "u", "i", "r", "t", known_items={"10", "11"})
    rows = sorted(zip(data.users, data.items, data.ratings, data.times, strict=True))
    assert rows == [("1", "10", 9.0, 200.0), ("1", "11", 4.0, 101.0)]
    assert data.dropped == 1  # counted (the build says so and records it), not lost without a word


def test_holdout_fold_is_the_readme_rule_and_about_a_fifth():
    import hashlib

    assert is_heldout("3", "17") == (int(hashlib.sha256(b"3:17").hexdigest(), 16) % 5 == 0)
    from genforge.apps.recommend.data import Interactions

    data = Interactions([str(u) for u in range(50) for _ in range(40)], [str(i) for _ in range(50) for i in range(40)],
                        [None] * 2000, [None] * 2000)
    keep, out = split(data)
    assert len(keep.users) + len(out.users) == 2000 and 0.16 < len(out.users) / 2000 < 0.24
    assert all(is_heldout(u, i) for u, i in zip(out.users, out.items, strict=True))


def test_real_catalogues(shared_data):
    anime = read_items(shared_data / "anime_recommendations" / "anime_info.dat", "anime_ids", ["name", "genre", "type"],
                       title_field="name", genre_field="genre")
    assert len(anime.ids) == 7390 and not any("&#" in t for t in anime.titles)
    movies = read_items(shared_data / "movietweetings_udacity" / "movies_clean.csv", "movie_id", ["movie", "genre"],
                        genre_field="genre")
    events = read_interactions([shared_data / "movietweetings_udacity" / "train_data.csv"], "user_id", "movie_id",
                               "rating", "timestamp", known_items=set(movies.ids))
    assert len(events.users) > 7900  # zero-padded catalogue ids match the log's unpadded ones
    assert norm_id("0000008") == "8" and norm_id("tt01") == "tt01"
