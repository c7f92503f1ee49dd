import codecs
import json
import random
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genforge.data.readers import (
    SkipFile,
    detect_encoding,
    find_files,
    html_text,
    iter_documents,
    read_documents,
)
from genforge.errors import DataError

CHINESE = "人工智能正在改变客户服务。我们的系统每天处理大量咨询请求。\n\n第二段：数据隐私非常重要，不能泄露用户的个人信息。"
FRENCH = "Le café était très bon, une vraie pièce de résistance — à refaire.\n\nÇa coûte 5 €, naïf mais sûr.\n"


def docs(path, **kw):
    return [d.strip() for d in read_documents(path, **kw)]


def test_text_split_modes(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Title\nline two\n\n\n   \nSecond para\n\nthird\n", encoding="utf-8")
    assert docs(path) == ["# Title\nline two", "Second para", "third"]
    assert docs(path, split_by="line") == ["# Title", "line two", "Second para", "third"]
    assert docs(path, split_by="file") == ["# Title\nline two\n\n\n   \nSecond para\n\nthird"]


def test_gb18030_chinese_is_detected(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes(CHINESE.encode("gb18030"))
    assert detect_encoding(path) == "gb18030"
    assert docs(path) == CHINESE.split("\n\n")


def test_latin1_is_detected(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(FRENCH.replace("€", "E").replace("—", "-").encode("latin-1"))
    assert docs(path)[0] == "Le café était très bon, une vraie pièce de résistance - à refaire."
    cp1252 = tmp_path / "cp1252.txt"  # Windows "ANSI": curly dashes and the euro sign in 0x80-0x9F
    cp1252.write_bytes(FRENCH.encode("cp1252"))
    assert docs(cp1252) == [p.strip() for p in FRENCH.split("\n\n")]


@pytest.mark.parametrize("text", [
    "café naïve résumé façade, this is latin-1 text long enough to pass the filters.\n",  # once Baltic cp775
    "El niño comió una manzana muy dulce y ¡qué rico!\n",  # once DOS cp850
    "El niño comió una manzana y ¡qué rico! Es un texto suficientemente largo.\n",  # once cp1250
])
def test_short_latin1_text_is_not_read_as_another_code_page(tmp_path, text):
    path = tmp_path / "short.txt"
    path.write_bytes(text.encode("latin-1"))
    assert path.read_bytes().decode(detect_encoding(path)) == text


@pytest.mark.parametrize(("codec", "text"), [
    ("cp1251", "Съешь же ещё этих мягких французских булок, да выпей чаю.\n"),
    ("cp1251", "Привет, как дела?\n"),
    ("big5", "人工智慧正在改變客戶服務。我們的系統每天處理大量諮詢請求。\n"),
    ("shift_jis", "人工知能は顧客サービスを変えています。私たちのシステムは毎日多くの問い合わせを処理します。\n"),
    ("cp1256", "مرحبا بالعالم، هذا نص طويل بما يكفي لتجاوز المرشحات في النظام.\n"),
])
def test_short_non_latin_legacy_text_keeps_its_encoding(tmp_path, codec, text):
    path = tmp_path / "short.txt"
    path.write_bytes(text.encode(codec))
    assert path.read_bytes().decode(detect_encoding(path)) == text


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-32"])
def test_byte_order_marks(tmp_path, codec):
    path = tmp_path / "bom.txt"
    path.write_bytes(FRENCH.encode(codec))  # utf-16/32 carry NUL bytes, yet are text
    assert docs(path) == [p.strip() for p in FRENCH.split("\n\n")]


def test_real_latin1_file(shared_data):
    path = shared_data / "mr_polarity" / "rt-polarity.all"
    lines = docs(path, split_by="line")
    assert len(lines) == 10662
    assert not any("\ufffd" in line for line in lines)
    assert any("clichés" in line for line in lines)


def test_binary_and_undecodable_files_are_counted(tmp_path):
    (tmp_path / "a.txt").write_text("good text here\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    rng = random.Random(0)
    (tmp_path / "noise.dat").write_bytes(bytes(rng.randrange(1, 256) for _ in range(20000)))
    with pytest.raises(SkipFile, match="binary"):
        detect_encoding(tmp_path / "image.png")
    skipped = Counter()
    seen = list(iter_documents(find_files([tmp_path]), skipped=skipped))
    assert [d for _, d in seen] == ["good text here\n"]
    assert skipped == {"binary": 1, "decode_error": 1}


def test_jsonl_records(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": "first", "id": 1}, {"text": ["line a", "line b"]}, {"id": 3}, "not a record",
            {"text": None}, {"text": 42}]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n{broken json\n\n", encoding="utf-8")
    skipped = Counter()
    assert list(read_documents(path, skipped=skipped)) == ["first", "line a\nline b", "", "42"]
    assert skipped == {"bad_record": 3}


def test_a_field_holding_an_object_is_a_bad_record_not_its_repr(tmp_path):
    """A nested record ({"text": {"en": ...}}) became the text "{'en': ...}" in the corpus."""
    rows = [{"text": "first"}, {"text": {"en": "hello", "zh": "你好"}}, {"text": ["a", {"b": 1}]}]
    skipped = Counter()
    (tmp_path / "a.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    assert list(read_documents(tmp_path / "a.jsonl", skipped=skipped)) == ["first"]
    (tmp_path / "b.json").write_text(json.dumps(rows), encoding="utf-8")
    assert list(read_documents(tmp_path / "b.json", skipped=skipped)) == ["first"]
    pq.write_table(pa.table({"text": [{"en": "hello"}, {"en": "world"}]}), tmp_path / "c.parquet")
    assert list(read_documents(tmp_path / "c.parquet", skipped=skipped)) == []
    assert skipped == {"bad_record": 6}


def test_json_array(shared_data):
    poems = list(read_documents(shared_data / "chinese_poetry" / "misc" / "lunyu.json", text_field="paragraphs"))
    assert len(poems) > 10 and poems[0].startswith("子曰：“学而时习之")


def test_csv_and_tsv(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('id,body\n1,"plain, with comma"\n2,"multi\nline ""quoted"""\n3\n', encoding="utf-8")
    skipped = Counter()
    assert list(read_documents(csv_path, text_field="body", skipped=skipped)) == [
        "plain, with comma", 'multi\nline "quoted"']
    assert skipped == {"bad_record": 1}
    tsv_path = tmp_path / "t.tsv"
    tsv_path.write_text("text\tlabel\nhello, world\t1\nsecond row\t0\n", encoding="utf-8")
    assert list(read_documents(tsv_path)) == ["hello, world", "second row"]


def test_real_csv(shared_data):
    reviews = list(read_documents(shared_data / "waimai_10k" / "waimai_10k.csv", text_field="review"))
    assert len(reviews) == 11987 and all(reviews)


def test_parquet_in_batches(tmp_path):
    path = tmp_path / "t.parquet"
    texts = [f"document number {i}" for i in range(10_000)]
    pq.write_table(pa.table({"text": texts, "n": list(range(10_000))}), path, row_group_size=3000)
    progress = []
    assert list(read_documents(path, progress=progress.append)) == texts
    assert len(progress) > 1 and sum(progress) <= path.stat().st_size


def test_missing_text_field_names_file_and_fields(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"body": "x", "id": 1}\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text("body,label\nx,1\n", encoding="utf-8")
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "c.parquet")
    for name, fields in [("a.jsonl", "body, id"), ("b.csv", "body, label"), ("c.parquet", "content")]:
        with pytest.raises(DataError, match=rf"{name}: no field 'text' \(it has: {fields}\)"):
            list(read_documents(tmp_path / name))


def test_html_visible_text(tmp_path):
    page = """<!DOCTYPE html><html><head><title>Ignored title</title><style>p {color: red}</style>
    <script>var secret = "do not keep";</script></head>
    <body><nav><a href="/">Home</a></nav>
      <h1>Caf&eacute; &amp; Bar</h1>
      <p>This is <b>bold</b> and
         <i>italic</i>&nbsp;text.<br>New line in the same paragraph.</p>
      <!-- a comment -->
      <noscript>enable js</noscript>
      <table><tr><td>cell 1</td><td>cell 2</td></tr></table>
      <pre>keep   this
  spacing</pre>
    </body></html>"""
    text = html_text(page)
    assert "Café & Bar" in text
    assert "This is bold and italic\xa0text.\nNew line in the same paragraph." in text
    assert "keep   this\n  spacing" in text  # <pre> keeps its spacing and indentation (code)
    for hidden in ("Ignored title", "color: red", "do not keep", "a comment", "enable js", "<"):
        assert hidden not in text
    path = tmp_path / "page.html"
    path.write_text(page, encoding="utf-8")
    paragraphs = docs(path)
    assert paragraphs[:2] == ["Home", "Café & Bar"]
    assert "cell 1\tcell 2" in paragraphs


def test_pre_blocks_keep_their_indentation():
    text = html_text("<p>Intro  text</p><pre>def f(x):\n    if x:\n\treturn 1\n    return 0</pre><p> after </p>")
    assert "def f(x):\n    if x:\n\treturn 1\n    return 0" in text and "Intro text" in text and "\nafter\n" in text


def test_find_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("hidden")
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train.jsonl").write_text("{}")
    found = find_files([tmp_path, tmp_path / "a.txt"], exclude=tmp_path / "out")
    assert found == [tmp_path / "a.txt", tmp_path / "b" / "z.txt"]  # a.txt named twice, read once
    with pytest.raises(DataError, match="input not found: .*missing.txt"):
        find_files([tmp_path / "missing.txt"])


def test_find_files_skips_earlier_genforge_outputs_inside_an_input_folder(tmp_path):
    """`prepare corpus --out corpus/v2` after `--out corpus/v1` read v1's manifest.json as a record and failed."""
    (tmp_path / "a.txt").write_text("a")
    for name, files in {"v1": {"manifest.json": '{"genforge_version": "0.1.0", "stage": "data.prepare"}',
                               "train.jsonl": "{}"},
                        "unfinished": {"prepare.partial.json": "{}", "train.partial.jsonl": "{}"},
                        "site": {"manifest.json": '{"name": "a web app"}', "index.html": "<p>corpus</p>"}}.items():
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    assert find_files([tmp_path]) == [tmp_path / "a.txt", tmp_path / "site" / "index.html",
                                      tmp_path / "site" / "manifest.json"]
    assert find_files([tmp_path / "v1"]) == [tmp_path / "v1" / "manifest.json", tmp_path / "v1" / "train.jsonl"]


def test_progress_covers_every_byte(tmp_path):
    (tmp_path / "a.txt").write_text("para one\n\npara two\n\n" * 2000, encoding="utf-8")
    (tmp_path / "b.bin").write_bytes(b"\x00" * 100)
    seen = []
    files = find_files([tmp_path])
    assert len(list(iter_documents(files, progress=seen.append))) == 4000
    assert sum(seen) == sum(f.stat().st_size for f in files)


def test_utf8_file_with_one_bad_byte_is_not_utf8(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(("ok " * 1000).encode() + "café".encode("latin-1"))
    assert codecs.lookup(detect_encoding(path)).name != "utf-8"
    assert docs(path)[0].endswith("café")


def test_utf8_text_with_a_stray_byte_is_read_whole(tmp_path):
    lines = [f"这是一行普通的中文文本，编号 {i}。" for i in range(2000)]
    data = "\n".join(lines).encode("utf-8")
    path = tmp_path / "scraped.txt"
    path.write_bytes(data[:50_000] + b"\xe9" + data[50_000:])  # between two characters
    assert detect_encoding(path) == "utf_8"
    read = docs(path, split_by="line")
    assert len(read) == len(lines) and sum("\ufffd" in d for d in read) == 1


def test_a_big_gb18030_file_is_detected_wherever_the_sample_ends(tmp_path):
    text = "\n".join(f"第{i}行：今天的天气很好，我们去公园散步。" for i in range(60_000))
    for pad in ("", "a"):  # shifts the 1 MiB sample's end into, or out of, a two-byte character
        path = tmp_path / f"gbk{pad}.txt"
        path.write_bytes((pad + text).encode("gb18030"))
        assert detect_encoding(path) == "gb18030"
        assert len(docs(path, split_by="line")) == 60_000


def test_tsv_has_no_quoting(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text('text\tlabel\n" The structure is tight.  \t1\nSecond review.\t0\nThird "quoted" one.\t1\n',
                    encoding="utf-8")
    assert docs(path) == ['" The structure is tight.', "Second review.", 'Third "quoted" one.']
