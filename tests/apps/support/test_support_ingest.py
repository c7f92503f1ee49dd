"""Knowledge-base ingestion: every FAQ format, documents (Markdown, text, HTML), encodings, chunking."""

import json

import pytest

from genforge.apps.support.ingest import chunk, ingest, read_faq, tokens
from genforge.errors import DataError


def test_faq_formats_group_variants_by_id_or_by_answer(tmp_path):
    (tmp_path / "a.csv").write_text("id,question,answer\nr,Refund?,Five days.\nr,Money back?,Five days.\n",
                                    encoding="utf-8")
    (tmp_path / "b.tsv").write_text("question\tanswer\nHours?\tNine to five.\nOpen when?\tNine to five.\n",
                                    encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"question": "Ship abroad?", "answer": "Yes.", "intent": "ship"})
                                      + "\n\n", encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps([{"question": "怎么退款？", "answer": "点击退款。"}]), encoding="utf-8")
    passages = ingest([tmp_path / "a.csv", tmp_path / "b.tsv", tmp_path / "c.jsonl", tmp_path / "d.json"])
    assert [p.id for p in passages] == list(range(6))
    assert [p.entry for p in passages[:2]] == ["r", "r"]
    assert passages[2].entry == passages[3].entry and passages[2].entry.startswith("faq-")  # same answer, no id
    assert passages[4].entry == "ship" and passages[4].source == "c.jsonl:1"
    assert passages[5].text == "怎么退款？" and passages[5].answer == "点击退款。" and passages[5].kind == "faq"


def test_documents_markdown_text_html_and_gbk(tmp_path):
    (tmp_path / "guide.md").write_text("# Guide\n\nReturns within 30 days.\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_bytes("退货政策：三十天内可以退货。".encode("gbk"))
    (tmp_path / "page.html").write_text("<html><script>var x=1;</script><body><nav>menu</nav><p>Gift cards never "
                                        "expire.</p></body></html>", encoding="utf-8")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    passages = ingest([tmp_path])
    texts = {p.source.split("#")[0]: p.text for p in passages}
    assert set(texts) == {"guide.md", "notes.txt", "page.html"}
    assert "Returns within 30 days." in texts["guide.md"]
    assert texts["notes.txt"] == "退货政策：三十天内可以退货。"
    assert texts["page.html"] == "Gift cards never expire." and all(p.kind == "doc" for p in passages)


def test_files_are_named_by_their_path_below_the_knowledge_base(tmp_path):
    for folder, text in (("billing", "Refunds are paid back within 5 days."), ("shipping", "Parcels take 3 days.")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text(text, encoding="utf-8")
    (tmp_path / "faq.csv").write_text("question,answer\nRefund?,Five days.\n", encoding="utf-8")
    passages = ingest([tmp_path / "faq.csv", tmp_path / "billing", tmp_path / "shipping"])
    assert [(p.entry, p.source) for p in passages[1:]] == [("billing/README.md#0", "billing/README.md#0"),
                                                          ("shipping/README.md#0", "shipping/README.md#0")]
    assert passages[0].source == "faq.csv:2"
    assert [p.entry for p in ingest([tmp_path / "billing" / "README.md"])] == ["README.md#0"]


def test_chunks_overlap_and_end_on_boundaries():
    text = " ".join(f"Sentence number {i} says something." for i in range(40))
    pieces = chunk(text, 200, 50)
    assert len(pieces) > 5 and all(len(p) <= 200 for p in pieces)
    assert all(p.endswith(".") for p in pieces[:-1])  # cut after a sentence, not mid-word
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert b[:20] in a  # each chunk starts inside the previous one: the overlap
    assert "".join(chunk("短文本。", 200, 50)) == "短文本。"


def test_tokens_segment_chinese_and_drop_stop_words():
    assert tokens("How do I get a REFUND?") == ["get", "refund"]
    zh = tokens("我想申请退款")
    assert "退款" in zh and "申请" in zh


@pytest.mark.parametrize(("name", "content", "message"), [
    ("faq.csv", "q,a\nx,y\n", "needs 'question' and 'answer'"),
    ("faq.csv", "question,answer\n,\n", "holds no FAQ rows"),
    ("faq.pdf", "x", "unsupported knowledge-base file"),
])
def test_bad_knowledge_base_files_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        ingest([tmp_path / name])


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ingest([tmp_path / "nope.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no FAQ"):
        ingest([tmp_path / "empty"])
    (tmp_path / "f.jsonl").write_text("{bad json\n", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        read_faq(tmp_path / "f.jsonl")
