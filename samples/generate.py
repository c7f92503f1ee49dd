"""Write the bundled sample corpus, samples/corpus/, deterministically (same bytes on every run).

Why generated: the quickstart needs a small English + Chinese corpus that genforge may ship under its own
licence, so nothing is copied from real data sets. The text is composed from hand-written sentence
templates (a fictional home-goods shop, "Brightwater Home" / 明川家居: shipping, returns, payments,
accounts, warranty, product care, stores) with slots filled from word lists by a seeded RNG.

It exercises every reader and cleaning step of `genforge data prepare`:
- formats: .txt (paragraphs), .md (FAQ), .jsonl and .csv (`text` field), .html (with nav/script/style
  noise), and one Chinese .txt encoded in GB18030 rather than UTF-8;
- personal data to scrub, all fake but valid-format: e-mails at example.com/.org/.net, US 555-01xx phone
  numbers, Chinese mobile numbers, Chinese ID numbers with a correct check digit, Luhn-valid public
  test card numbers (4111 1111 1111 1111 ...), IPv4 addresses from the documentation ranges;
- duplicates: paragraphs repeated with other case/punctuation/whitespace (exact after normalisation)
  and with one word or character changed (near duplicates), inside and across files.

It also writes `dialogues.jsonl`: support chats in the OpenAI `messages` format (a system prompt in two of three,
one or two customer questions from the FAQ, each answered by its own answer template) for
the quickstart's SFT step, from a separate seed so the corpus bytes do not depend on it.

Run from the repository root: `python samples/generate.py` (about 500 KB; the output is committed, so the
quickstart needs no generation step).
"""

from __future__ import annotations

import csv
import html
import io
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from templates import EN, ZH  # noqa: E402  (word lists and sentence templates, beside this script)

OUT = Path(__file__).resolve().parent / "corpus"
SEED = 20261128

TEST_CARDS = ["4111 1111 1111 1111", "4012 8888 8888 1881", "5555 5555 5555 4444", "5105 1051 0510 5100",
              "3782 822463 10005", "6011 1111 1111 1117", "6200 0000 0000 0005"]


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def cn_id(rng: random.Random) -> str:
    """An 18-digit resident ID number with a valid ISO 7064 MOD 11-2 check digit (fake person)."""
    region = rng.choice(["110101", "310104", "440305", "330106", "510107", "420102"])
    body = f"{region}{rng.randint(1960, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


class Filler:
    """Fills `{slot}` templates from a language's word lists; PII slots get fresh fake values."""

    def __init__(self, lang: dict, rng: random.Random):
        self.lang, self.rng = lang, rng

    def value(self, slot: str) -> str:
        rng, words = self.rng, self.lang["words"]
        if slot == "email":
            first = rng.choice(EN["words"]["first"]).lower()
            return f"{first}.{rng.choice(EN['words']['last']).lower()}{rng.randint(1, 99)}@" \
                   f"{rng.choice(['example.com', 'example.org', 'example.net'])}"
        if slot == "phone":
            return rng.choice(["+1 555-01{:02d}", "(555) 01{:02d}", "555-01{:02d}"]).format(rng.randint(0, 99))
        if slot == "phone_cn":
            return f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(0, 9999):04d}{rng.randint(0, 9999):04d}"
        if slot == "card":
            return rng.choice(TEST_CARDS)
        if slot == "ip":
            return f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randint(1, 254)}"
        if slot == "idcard":
            return cn_id(rng)
        if slot == "order":
            return f"BW{rng.randint(100000, 999999)}"
        if m := re.fullmatch(r"n(\d+)_(\d+)", slot):  # n2_5 -> an integer in [2, 5]
            return str(rng.randint(int(m[1]), int(m[2])))
        return rng.choice(words[slot])

    def fill(self, template: str) -> str:
        out, i = [], 0
        while (j := template.find("{", i)) >= 0:
            k = template.index("}", j)
            out.append(template[i:j])
            out.append(self.value(template[j + 1 : k]))
            i = k + 1
        out.append(template[i:])
        return "".join(out)

    def paragraph(self, topic: str | None = None, sentences: tuple[int, int] = (3, 6)) -> str:
        topics = self.lang["topics"]
        topic = topic or self.rng.choice(sorted(topics))
        chosen = self.rng.sample(topics[topic], min(len(topics[topic]), self.rng.randint(*sentences)))
        return self.lang["joiner"].join(self.fill(t) for t in chosen)

    def ticket(self) -> str:
        return self.fill(self.rng.choice(self.lang["tickets"]))


def exact_variant(text: str, rng: random.Random) -> str:
    """Same words, other case/punctuation/whitespace: an exact duplicate once normalised."""
    swaps = [(",", " ,"), (".", " ."), ("，", ","), ("。", ". ")]
    for a, b in rng.sample(swaps, 2):
        text = text.replace(a, b)
    return "  " + (text.upper() if rng.random() < 0.5 else text.lower()) + " "


def near_variant(text: str, rng: random.Random, lang: str) -> str:
    """One word (English) or one character (Chinese) changed: a near duplicate."""
    if lang == "en":
        words = text.split(" ")
        i = rng.randrange(len(words))
        words[i] = rng.choice(["kindly", "promptly", "really", "always", "usually"])
        return " ".join(words)
    i = rng.randrange(len(text) // 4, 3 * len(text) // 4)
    return text[:i] + rng.choice("很也都还再就") + text[i + 1 :]


def with_duplicates(paras: list[str], rng: random.Random, lang: str, exact: int, near: int) -> list[str]:
    out = list(paras)
    for _ in range(exact):
        out.insert(rng.randrange(len(out) + 1), exact_variant(rng.choice(paras), rng))
    for _ in range(near):
        out.insert(rng.randrange(len(out) + 1), near_variant(rng.choice(paras), rng, lang))
    return out


def write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def html_page(title: str, headings: list[str], paras: list[str], footer: str, lang: str) -> str:
    body = []
    for i, p in enumerate(paras):
        if i % 4 == 0:
            body.append(f"<h2>{html.escape(headings[(i // 4) % len(headings)])}</h2>")
        body.append(f"<p>{html.escape(p)}</p>")
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            "</title>\n<style>body { font-family: sans-serif; } .nav a { margin: 0 8px; }</style>\n"
            "<script>window.dataLayer = window.dataLayer || []; function track(e) { dataLayer.push(e); }</script>\n"
            '</head>\n<body>\n<div class="nav"><a href="/">Home</a><a href="/help">Help</a><a href="/cart">Cart</a></div>\n'
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) +
            f"\n<footer><p>{html.escape(footer)}</p></footer>\n</body>\n</html>\n")


def english(rng: random.Random) -> dict[str, str]:
    f = Filler(EN, rng)
    topics = sorted(EN["topics"])
    articles = with_duplicates([f.paragraph() for _ in range(260)], rng, "en", exact=8, near=8)
    faq = []
    for topic in topics:
        faq.append(f"## {EN['headings'][topic]}\n")
        for q in EN["questions"][topic]:
            faq.append(f"### {q}\n\n{f.paragraph(topic, (2, 4))}\n")
    tickets = [{"id": f"T-{i:05d}", "channel": rng.choice(["email", "chat", "phone"]), "text": f.ticket()}
               for i in range(1, 341)]
    tickets.insert(50, dict(tickets[10], id="T-90001"))  # a re-sent ticket: exact duplicate
    products = [[f"P{i:04d}", f"{f.value('colour').title()} {f.value('product')}", f.paragraph("care", (3, 5))]
                for i in range(1, 121)]
    help_paras = [f.paragraph() for _ in range(60)] + [articles[3]]  # one article reused on the web page
    return {
        "en/articles.txt": "\n\n".join(articles) + "\n",
        "en/support_faq.md": "# Brightwater Home: frequently asked questions\n\n" + "\n".join(faq),
        "en/tickets.jsonl": "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tickets),
        "en/products.csv": csv_text(["id", "title", "text"], products),
        "en/help_center.html": html_page("Brightwater Home help centre", [EN["headings"][t] for t in topics],
                                         help_paras, f"Contact us: {f.value('email')} or {f.value('phone')}", "en"),
    }


def chinese(rng: random.Random) -> dict[str, tuple[str, str]]:
    f = Filler(ZH, rng)
    topics = sorted(ZH["topics"])
    articles = with_duplicates([f.paragraph(sentences=(3, 5)) for _ in range(230)], rng, "zh", exact=6, near=8)
    faq = []
    for topic in topics:
        faq.append(f"## {ZH['headings'][topic]}\n")
        for q in ZH["questions"][topic]:
            faq.append(f"### {q}\n\n{f.paragraph(topic, (2, 4))}\n")
    tickets = [{"id": f"C-{i:05d}", "channel": rng.choice(["微信", "电话", "邮件"]), "text": f.ticket()}
               for i in range(1, 261)]
    reviews = [[f"R{i:04d}", rng.randint(1, 5), f.paragraph("care", (2, 4))] for i in range(1, 101)]
    notices = with_duplicates([f.paragraph(sentences=(3, 5)) for _ in range(50)], rng, "zh", exact=1, near=2)
    help_paras = [f.paragraph() for _ in range(50)]
    return {
        "zh/articles.txt": ("\n\n".join(articles) + "\n", "utf-8"),
        "zh/faq.md": ("# 明川家居常见问题\n\n" + "\n".join(faq), "utf-8"),
        "zh/tickets.jsonl": ("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tickets), "utf-8"),
        "zh/reviews.csv": (csv_text(["id", "rating", "text"], reviews), "utf-8"),
        "zh/help_center.html": (html_page("明川家居帮助中心", [ZH["headings"][t] for t in topics], help_paras,
                                          f"联系我们：{f.value('email')}，电话 {f.value('phone_cn')}", "zh"), "utf-8"),
        # legacy systems in China still export GB18030; the reader must detect and decode it
        "zh/notices.gb18030.txt": ("\r\n\r\n".join(notices) + "\r\n", "gb18030"),
    }


SYSTEM = {"en": "You are the Brightwater Home support assistant. Answer briefly and politely.",
          "zh": "你是明川家居的客服助手，请简洁礼貌地回答。"}
OPENERS = {"en": ["", "Hi! ", "Hello, ", "Good morning. ", "Quick question: "], "zh": ["", "你好，", "您好！", "请问，"]}


def dialogues(rng: random.Random, per_language: int = 300) -> str:
    """Chats in the OpenAI `messages` format, one JSON object per line (English and Chinese)."""
    lines = []
    for code, lang in (("en", EN), ("zh", ZH)):
        f = Filler(lang, rng)
        topics = sorted(lang["questions"])
        for _ in range(per_language):
            # a third without the system prompt, so that the model answers when a caller sends none
            messages = [{"role": "system", "content": SYSTEM[code]}] if rng.random() < 2 / 3 else []
            for _turn in range(rng.choice([1, 1, 2])):
                topic = rng.choice(topics)
                opener, question = rng.choice(OPENERS[code]), rng.choice(lang["questions"][topic])
                asked = question[0].lower() + question[1:] if opener.endswith(", ") and code == "en" else question
                messages += [{"role": "user", "content": opener + asked},
                             {"role": "assistant", "content": f.fill(lang["answers"][question])}]
            lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def main() -> None:
    assert all(luhn_ok(c) for c in TEST_CARDS)
    rng = random.Random(SEED)
    files = {name: (text, "utf-8") for name, text in english(rng).items()} | chinese(rng)
    for old in OUT.rglob("*"):
        if old.is_file() and old.relative_to(OUT).as_posix() not in files:
            old.unlink()
    total = 0
    for name, (text, encoding) in sorted(files.items()):
        write_text(OUT / name, text, encoding)
        size = (OUT / name).stat().st_size
        total += size
        print(f"{size:>8,} B  {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}/{name}")
    print(f"{total:>8,} B  in {len(files)} files")
    chats = OUT.parent / "dialogues.jsonl"
    write_text(chats, dialogues(random.Random(SEED + 1)), "utf-8")
    print(f"{chats.stat().st_size:>8,} B  {chats.name}")


if __name__ == "__main__":
    main()
