import tracemalloc

import numpy as np
import pytest

from genforge.data.dedup import (
    DedupIndex,
    band_keys,
    chunk_band_keys,
    chunk_signatures,
    doc_signature,
    jaccard_estimate,
    normalize_for_dedup,
    optimal_bands,
    shingle_hashes,
)
from genforge.errors import ConfigError

RNG = np.random.default_rng(7)
WORDS = ["".join(RNG.choice(list("abcdefghijklmnopqrstuvwxyz"), size=RNG.integers(2, 9))) for _ in range(2000)]
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]

ENGLISH = (
    "Our support team answers every request within one business day. If your order has not arrived after "
    "ten days, please write to us with the order number and the address it was sent to, and we will trace "
    "the parcel with the carrier. Refunds are issued to the original payment method once the returned item "
    "has been inspected at our warehouse, which usually takes three to five working days after it arrives."
)
CHINESE = (
    "我们的客服团队会在一个工作日内回复每一个请求。如果您的订单在十天后仍未送达，请将订单号和收货地址发送给我们，"
    "我们会与快递公司联系追踪包裹。退货商品到达仓库并检验合格后，退款将原路返回到您的付款账户，通常需要三到五个工作日。"
    "如需修改收货地址，请在订单发货之前联系我们，发货之后将无法更改。"
)


def true_jaccard(a: str, b: str, k: int = 5) -> float:
    def shingles(s: str) -> set[str]:
        n = normalize_for_dedup(s)
        return {n[i : i + k] for i in range(max(1, len(n) - k + 1))}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def add(index: DedupIndex, text: str) -> str | None:
    return index.add(*doc_signature(text, num_perm=index.num_perm))


def test_normalize_ignores_case_punctuation_and_whitespace():
    assert normalize_for_dedup("Hello,  World!\n") == normalize_for_dedup("hello world") == "helloworld"
    assert normalize_for_dedup("ＡＢＣ，你好！") == "abc你好"  # full-width forms fold to ASCII
    assert normalize_for_dedup("Straße") == normalize_for_dedup("STRASSE")


def test_normalize_keeps_combining_vowel_signs():
    # Hindi "he goes to the market every morning" / "she ...": only vowel signs (combining marks) differ.
    he = "वह रोज़ सुबह बाज़ार जाता है और दूध लाता है"
    she = "वह रोज़ सुबह बाज़ार जाती है और दूध लाती है"
    assert normalize_for_dedup(he) != normalize_for_dedup(she)
    assert normalize_for_dedup(he) == "वहरोज़सुबहबाज़ारजाताहैऔरदूधलाताहै"
    assert normalize_for_dedup("ไปตลาด ซื้อผลไม้") == "ไปตลาดซื้อผลไม้"  # Thai vowel and tone marks stay
    assert normalize_for_dedup("I love it ❤️!") == normalize_for_dedup("i love it ❤")  # emoji + its selector go
    index = DedupIndex()
    assert add(index, he) is None
    assert add(index, she) is None


def test_exact_and_normalised_duplicates():
    index = DedupIndex()
    assert add(index, ENGLISH) is None
    assert add(index, ENGLISH) == "exact_dup"
    assert add(index, "  " + ENGLISH.upper().replace(",", "").replace(" ", "\n ")) == "exact_dup"
    assert add(index, CHINESE) is None
    assert add(index, CHINESE.replace("，", ",").replace("。", " ")) == "exact_dup"
    assert len(index) == 2


def test_one_changed_word_or_character_is_a_near_duplicate():
    index = DedupIndex(threshold=0.8)
    assert add(index, ENGLISH) is None
    assert add(index, CHINESE) is None
    assert add(index, ENGLISH.replace("parcel", "package")) == "near_dup"
    assert add(index, CHINESE.replace("仓库", "仓房")) == "near_dup"
    assert len(index) == 2


def test_unrelated_documents_are_kept():
    index = DedupIndex()
    docs = [" ".join(RNG.choice(WORDS, size=120)) for _ in range(200)]
    docs += ["".join(RNG.choice(HANZI, size=150)) for _ in range(100)]
    assert [add(index, d) for d in docs] == [None] * len(docs)
    assert len(index) == len(docs)


def test_short_and_empty_texts():
    hashes = shingle_hashes("abc", 5)
    assert hashes.shape == (1,)
    assert shingle_hashes("", 5).shape == (0,)
    # a short text is not confused with a longer one that starts the same way
    assert not np.array_equal(doc_signature("abc")[1], doc_signature("abcd")[1])
    index = DedupIndex()
    assert add(index, "ok") is None
    assert add(index, "OK!") == "exact_dup"
    assert add(index, "no") is None


def test_estimated_jaccard_tracks_true_jaccard():
    rng = np.random.default_rng(0)
    errors = []
    for frac in np.linspace(0.02, 0.9, 40):
        base = list(rng.choice(WORDS, size=150))
        other = list(base)
        for j in rng.choice(150, size=int(frac * 150), replace=False):
            other[j] = rng.choice(WORDS)
        a, b = " ".join(base), " ".join(other)
        est = jaccard_estimate(doc_signature(a, num_perm=256)[1], doc_signature(b, num_perm=256)[1])
        errors.append(est - true_jaccard(a, b))
    errors = np.abs(errors)
    # standard error of a 256-permutation estimate is <= 0.031; allow ~4 sigma per pair, tight on average
    assert errors.max() < 0.13
    assert errors.mean() < 0.04


def test_signatures_are_deterministic_and_seeded():
    k1, s1 = doc_signature(ENGLISH)
    k2, s2 = doc_signature(ENGLISH)
    assert k1 == k2 and len(k1) == 16 and s1.dtype == np.uint32 and s1.shape == (128,)
    assert np.array_equal(s1, s2)
    assert not np.array_equal(s1, doc_signature(ENGLISH, seed=2)[1])


@pytest.mark.parametrize("shingle_size", [5, 1])
def test_chunk_signatures_equal_per_document_signatures(shingle_size):
    """prepare signs whole chunks at once; the result must be bit-identical to doc_signature per text,
    including empty texts, texts shorter than a shingle and texts longer than one matrix block."""
    texts = [ENGLISH, "", "ab", "a, b!", CHINESE, ENGLISH.upper(), "x" * 9000 + ENGLISH, "abcde", "😀 emoji 😀"]
    keys, sigs = chunk_signatures(texts, num_perm=64, shingle_size=shingle_size)
    assert sigs.shape == (len(texts), 64) and sigs.dtype == np.uint32
    for text, key, sig in zip(texts, keys, sigs, strict=True):
        want_key, want_sig = doc_signature(text, num_perm=64, shingle_size=shingle_size)
        assert key == want_key and np.array_equal(sig, want_sig), text[:20]
    assert chunk_signatures([])[1].shape == (0, 128)


def test_precomputed_band_keys_give_the_same_decisions():
    docs = corpus()
    keys, sigs = chunk_signatures(docs)
    index, bulk = DedupIndex(), DedupIndex()
    bands = chunk_band_keys(sigs, bulk.bands, bulk.rows)
    assert [band_keys(s, bulk.bands, bulk.rows) for s in sigs] == bands.tolist()
    expected = [index.add(k, s) for k, s in zip(keys, sigs, strict=True)]
    assert [bulk.add(k, s, b) for k, s, b in zip(keys, sigs, bands.tolist(), strict=True)] == expected
    assert "near_dup" in expected and "exact_dup" in expected


def test_band_choice_matches_datasketch_weighted_for_recall():
    from datasketch.lsh import _optimal_param

    for threshold, num_perm in [(0.5, 64), (0.8, 128), (0.9, 256)]:
        assert optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.1, 0.9)
    bands, rows = optimal_bands(0.8, 128)
    assert 1 - (1 - 0.85 ** rows) ** bands > 0.95  # a pair just above the threshold is compared


def test_near_duplicates_just_above_the_threshold_are_found():
    rng = np.random.default_rng(0)
    found = 0
    for i in range(200):  # ~130 characters; one word changed: 5-shingle Jaccard ~0.85-0.9
        words = [str(w) for w in rng.choice(WORDS, 22)]
        copy = list(words)
        copy[int(rng.integers(len(copy)))] = f"x{i}"
        index = DedupIndex(threshold=0.8)
        index.add(*doc_signature(" ".join(words)))
        found += index.add(*doc_signature(" ".join(copy))) == "near_dup"
    assert found >= 180  # datasketch's equal weights (9 bands x 13 rows) find ~150


def corpus(n: int = 300) -> list[str]:
    rng = np.random.default_rng(3)
    docs = []
    for _ in range(n):
        if docs and rng.random() < 0.3:  # a near or exact copy of an earlier doc
            words = docs[rng.integers(len(docs))].split()
            if rng.random() < 0.5:
                words[rng.integers(len(words))] = str(rng.choice(WORDS))
            docs.append(" ".join(words))
        else:
            docs.append(" ".join(rng.choice(WORDS, size=rng.integers(20, 200))))
    return docs


def test_on_disk_index_gives_the_same_decisions(tmp_path):
    docs = corpus()
    memory = DedupIndex()
    expected = [add(memory, d) for d in docs]
    assert expected.count("exact_dup") > 10 and expected.count("near_dup") > 10
    with DedupIndex(path=tmp_path / "index.sqlite") as disk:
        assert [add(disk, d) for d in docs[:150]] == expected[:150]
    # reopening continues against what the file already holds
    with DedupIndex(path=tmp_path / "index.sqlite") as disk:
        assert len(disk) == len(memory) - expected[150:].count(None)
        assert [add(disk, d) for d in docs[150:]] == expected[150:]
        assert len(disk) == len(memory)


def test_on_disk_index_refuses_other_parameters(tmp_path):
    DedupIndex(path=tmp_path / "i.sqlite").close()
    with pytest.raises(ConfigError, match="was built with"):
        DedupIndex(threshold=0.5, path=tmp_path / "i.sqlite")


def test_bad_parameters():
    with pytest.raises(ConfigError, match="threshold"):
        DedupIndex(threshold=1.5)
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        DedupIndex(num_perm=16, bands=5, rows=4)
    with pytest.raises(ConfigError, match="shape"):
        DedupIndex().add(b"k" * 16, np.zeros(64, dtype=np.uint32))


def test_memory_per_kept_document_is_bounded():
    """The documented budget (module docstring): well under 2 KB per kept doc at 128 permutations."""
    rng = np.random.default_rng(1)
    sigs = rng.integers(0, 2**32, size=(16384, 128), dtype=np.uint64).astype(np.uint32)
    tracemalloc.start()
    index = DedupIndex()
    for i, sig in enumerate(sigs):
        index.add(i.to_bytes(16, "little"), sig)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(index) == len(sigs)
    assert used / len(sigs) < 2000
