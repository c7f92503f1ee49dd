"""A tiny company for the support tests: a FAQ (English and Chinese) with ids, a Markdown and an HTML
document, support history, calibration questions; and one assistant built from them (session scope)
over the real MiniLM embeddings, a 2-step tiny-BERT intent classifier and a 2-step SFT of the tiny Llama."""

import csv
import json
from pathlib import Path

import pytest

FAQ = {
    "refund": (["How do I get a refund?", "I want my money back", "Can I be refunded for my order?"],
               "Refunds go back to the original payment method within 5 business days. Questions: "
               "billing@example.com."),
    "shipping": (["How long does delivery take?", "When will my package arrive?", "What is the shipping time?"],
                 "Standard delivery takes 3 to 5 business days."),
    "password": (["How do I reset my password?", "I forgot my password", "I cannot log in to my account"],
                 "Click 'Forgot password' on the sign-in page and follow the link we e-mail you."),
    "refund_zh": (["如何申请退款？", "我想退货退款", "退款多久到账？"], "请在订单页面点击申请退款，我们会在五个工作日内处理。"),
}
VAL = [("how can I get my money refunded", "refund"), ("how many days until my parcel is delivered", "shipping"),
       ("I lost my password, how do I change it", "password"), ("怎么退款", "refund_zh"),
       ("what is the weather in Paris tomorrow", "oos"), ("tell me a joke about cats", "oos"),
       ("who won the football match yesterday", "oos"), ("recommend a good pizza recipe", "oos")]
OOS = ["what time is it in Tokyo", "play some music", "how tall is the Eiffel tower", "book me a flight to Rome",
       "what's a good movie tonight", "translate hello into French"]
MARKDOWN = """# Returns policy

You may return any unused item within 30 days of delivery. Print the prepaid label from your orders page.

## Warranty

Electronics carry a two-year warranty. A faulty device is repaired or replaced free of charge.
"""
HTML = """<html><head><style>.x{color:red}</style><script>var secret = 1;</script></head>
<body><nav>Home | Shop</nav><h1>Gift cards</h1><p>Gift cards never expire and can be used on any order.</p></body></html>"""


@pytest.fixture(scope="session")
def company(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("company")
    with open(root / "faq.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "answer"])
        writer.writerows((entry, q, answer) for entry, (questions, answer) in FAQ.items() for q in questions)
    (root / "docs").mkdir()
    (root / "docs" / "returns.md").write_text(MARKDOWN, encoding="utf-8")
    (root / "docs" / "giftcards.html").write_text(HTML, encoding="utf-8")
    with open(root / "val.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *VAL])
    (root / "oos.txt").write_text("\n".join(OOS) + "\n", encoding="utf-8")
    with open(root / "history.jsonl", "w", encoding="utf-8") as f:
        for questions, answer in FAQ.values():
            for q in questions:
                f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
    return root


@pytest.fixture(scope="session")
def assistant_dir(tmp_path_factory, company, bert_dir, llama_dir) -> Path:
    from genforge.apps.support.build import build
    from genforge.apps.support.config import BuildConfig

    out = tmp_path_factory.mktemp("assistant") / "support"
    return build(BuildConfig(kb=[company / "faq.csv", company / "docs"], history=company / "history.jsonl",
                             val=company / "val.csv", oos=company / "oos.txt", out=out, intent_base=bert_dir,
                             model=llama_dir, classify_steps=2, classify_batch=8, sft_steps=2, seq_len=1024,
                             chunk_chars=120, overlap=30, passage_chars=120))


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory, assistant_dir) -> Path:
    """The built assistant with fixed thresholds (the tiny calibration set makes them arbitrary), so the
    HTTP and browser tests know which questions get a FAQ answer and which a hand-off."""
    import shutil

    out = tmp_path_factory.mktemp("served") / "support"
    shutil.copytree(assistant_dir, out)
    meta = json.loads((out / "support.json").read_text(encoding="utf-8"))
    meta["thresholds"] = {"handoff_confidence": 0.45, "oos": None, "faq": 0.5}
    (out / "support.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


@pytest.fixture
def support_app(served_dir, tmp_path):
    """support_app(**overrides) -> (FastAPI app, ServerState) of the assistant with a database in tmp_path."""
    from genforge.apps.support.config import SupportServeConfig
    from genforge.apps.support.server import make_app

    def make(**overrides):
        return make_app(SupportServeConfig(**{"assistant": served_dir, "db": f"sqlite:///{tmp_path / 'serve.db'}",
                                              "max_new_tokens": 8, **overrides}))

    return make
