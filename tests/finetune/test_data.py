import pytest

from genforge.errors import DataError
from genforge.finetune.data import (
    hash_bucket,
    hash_split,
    label_set,
    parse_labels,
    read_labelled,
    read_records,
)


def test_single_and_multi_label_parsing():
    assert parse_labels(2, False, ",") == ["2"]
    assert parse_labels(2.0, False, ",") == ["2"]
    assert parse_labels(" positive ", False, ",") == ["positive"]
    assert parse_labels(["b", "a", "b"], True, ",") == ["a", "b"]
    assert parse_labels("billing|refund", True, "|") == ["billing", "refund"]
    assert parse_labels('["x", "y"]', True, ",") == ["x", "y"]
    assert parse_labels("", True, ",") == []
    with pytest.raises(ValueError, match="--multi-label"):
        parse_labels(["a", "b"], False, ",")


def test_read_labelled_csv_jsonl_and_latin1(tmp_path):
    (tmp_path / "a.csv").write_bytes("text,label\ncaf\xe9 prices up,pos\r\nbad news,neg\r\n".encode("latin-1"))
    assert read_labelled(tmp_path / "a.csv", "text", "label") == [("café prices up", ["pos"]), ("bad news", ["neg"])]
    (tmp_path / "b.jsonl").write_text('{"t": "x", "tags": ["a", "b"]}\n\n{"t": "y", "tags": "c"}\n')
    assert read_labelled(tmp_path / "b.jsonl", "t", "tags", multi_label=True) == [("x", ["a", "b"]), ("y", ["c"])]
    (tmp_path / "c.tsv").write_text("text\tlabel\nhello\t1\n")
    assert read_labelled(tmp_path / "c.tsv", "text", "label") == [("hello", ["1"])]


def test_a_json_array_of_text_label_pairs_reads_as_text_and_label(tmp_path):
    """FinFE ships `[[text, label], ...]`, which `app monitor train` reads: so do classify and robustness eval."""
    (tmp_path / "pairs.json").write_text('[["股市大涨", 2], ["亏损扩大", 0]]', encoding="utf-8")
    assert read_labelled(tmp_path / "pairs.json", "text", "label") == [("股市大涨", ["2"]), ("亏损扩大", ["0"])]
    (tmp_path / "bad.json").write_text('[["a", 1, 2]]', encoding="utf-8")
    with pytest.raises(DataError, match="array of objects or of \\[text, label\\] pairs"):
        read_labelled(tmp_path / "bad.json", "text", "label")


def test_tsv_quotes_are_text_not_quoting(tmp_path):
    """A TSV text that opens with '"' (UCI's IMDB sentences do) once swallowed every row up to the next
    quote into one example: 4 rows read as 2, silently."""
    (tmp_path / "q.tsv").write_text('text\tlabel\n" The structure is tight.\t1\nplain\t0\n'
                                    'a "film".\t0\nlast\t1\n', encoding="utf-8")
    assert read_labelled(tmp_path / "q.tsv", "text", "label") == [
        ('" The structure is tight.', ["1"]), ("plain", ["0"]), ('a "film".', ["0"]), ("last", ["1"])]


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "a", "label": 1}\n{"text": "b"\n', r"b\.jsonl:2 is not valid JSON"),
    ('{"text": "a", "label": 1}\n{"txt": "b", "label": 1}\n', r"b\.jsonl:2: no field 'text'"),
    ('{"text": "", "label": 1}\n', r"b\.jsonl:1: 'text' must be a non-empty string"),
    ('{"text": "a", "label": ["x", "y"]}\n', r"b\.jsonl:1: bad 'label' value"),
    ("", "holds no examples"),
])
def test_bad_records_name_the_line(tmp_path, content, message):
    (tmp_path / "b.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        read_labelled(tmp_path / "b.jsonl", "text", "label")


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(read_records(tmp_path / "missing.csv"))
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"x\.txt: unsupported format '\.txt'; use \.csv, \.tsv, \.jsonl or \.json$"):
        list(read_records(tmp_path / "x.txt"))
    with pytest.raises(DataError, match=r"x\.txt: unsupported format '\.txt'; use \.jsonl or \.json$"):
        list(read_records(tmp_path / "x.txt", kinds=("jsonl", "json")))
    assert list(read_records(tmp_path / "x.txt", plain_field="text")) == [(1, {"text": "hello"})]
    (tmp_path / "short.csv").write_text("text,label\nonly-one-field\n")
    with pytest.raises(DataError, match=r"short\.csv:2: the row has a different number of fields"):
        list(read_records(tmp_path / "short.csv"))


def test_hash_split_follows_the_shared_convention():
    texts = [f"sentence number {i}" for i in range(200)]
    train, val = hash_split([(t, ["x"]) for t in texts])
    assert {t for t, _ in val} == {t for t in texts if hash_bucket(t) == 8}
    assert len(train) + len(val) == 200 and 5 < len(val) < 40
    assert hash_bucket("  same text ") == hash_bucket("same text")
    with pytest.raises(DataError, match="empty validation set"):
        hash_split([(t, ["x"]) for t in texts if hash_bucket(t) != 8])


def test_label_set_sorts_numbers_numerically():
    assert label_set([("a", ["10"]), ("b", ["2"]), ("c", ["1"])]) == ["1", "2", "10"]
    assert label_set([("a", ["neutral", "bullish"]), ("b", ["bearish"])]) == ["bearish", "bullish", "neutral"]
