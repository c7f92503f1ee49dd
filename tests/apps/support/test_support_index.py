"""The hybrid index over the real MiniLM: RRF fusion, per-entry hits, Chinese via BM25, save/load."""

import pytest

from genforge.apps.support.index import build_index, load_encoder, load_index, rrf
from genforge.apps.support.ingest import ingest


def test_rrf_adds_reciprocal_ranks():
    scores = rrf([[1, 2, 3], [3, 1]], k=60)
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[2] == pytest.approx(1 / 62)
    assert sorted(scores, key=lambda p: -scores[p]) == [1, 3, 2]  # in both lists beats first in one


@pytest.fixture(scope="module")
def index(company):
    return build_index(ingest([company / "faq.csv", company / "docs"], 120, 30), load_encoder(None))


def test_paraphrases_find_their_entry_once(index):
    hits = index.search("how can I get my money refunded", k=5)
    assert hits[0].passage.entry == "refund"
    assert len({h.passage.entry for h in hits}) == len(hits)  # one hit per FAQ entry
    assert hits[0].cosine > 0.5 and hits[0].rrf > hits[-1].rrf
    batch = index.search_many(["when does my package arrive", "I forgot my password"], k=3)
    assert [h[0].passage.entry for h in batch] == ["shipping", "password"]


def test_chinese_questions_match_through_jieba_bm25(index):
    hits = index.search("怎么申请退款", k=3)
    assert hits[0].passage.entry == "refund_zh" and hits[0].bm25 > 0


def test_documents_are_retrieved_as_chunks(index):
    hits = index.search("how long is the warranty on electronics", k=3)
    assert hits[0].passage.kind == "doc" and "warranty" in hits[0].passage.text.lower()


def test_save_and_load_give_the_same_hits(index, tmp_path):
    index.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx", index.encoder)
    query = "when will my order be delivered"
    assert [(h.passage.id, round(h.cosine, 5)) for h in again.search(query)] == \
           [(h.passage.id, round(h.cosine, 5)) for h in index.search(query)]


def test_an_entry_named_by_the_classifier_gets_its_closest_passage(index):
    vector = index.encoder(["when will my parcel come"])[0]
    hit = index.hit_for("password", vector)  # any entry, ranked or not
    assert hit.passage.entry == "password"
    cosines = [float(index.vectors[pid] @ vector) for pid in index.entries["password"]]
    assert hit.cosine == pytest.approx(max(cosines)) and len(cosines) == 3
