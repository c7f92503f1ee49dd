import pytest

from genforge.data.pii import luhn_valid, scrub_pii, valid_cn_id, valid_iban

# Test numbers: Visa/Mastercard/Amex test cards (Luhn-valid), the GB 11643 example ID 11010519491231002X,
# Ofcom's drama range (+44 20 7946 0xxx) and the 555-01xx / 555-2671 fictional North-American numbers; the
# IBANs are the example numbers of their countries' banks and of the IBAN registry.


@pytest.mark.parametrize("text, expected, kind", [
    ("mail zhang.wei+hr@example.co.uk now", "mail <EMAIL> now", "EMAIL"),
    ("邮箱li_na@corp.cn联系我", "邮箱<EMAIL>联系我", "EMAIL"),
    ("to " + "x" * 64 + "@example.com.", "to <EMAIL>.", "EMAIL"),  # the longest local part RFC 5321 allows
    ("ID 11010519491231002X on file", "ID <ID> on file", "ID"),
    ("身份证号440304198512311233。", "身份证号<ID>。", "ID"),
    ("card 4111 1111 1111 1111 exp", "card <CARD> exp", "CARD"),
    ("card 5555-5555-5555-4444.", "card <CARD>.", "CARD"),
    ("amex 378282246310005", "amex <CARD>", "CARD"),
    ("ring +44 20 7946 0958 today", "ring <PHONE> today", "PHONE"),
    ("ring +1 (415) 555-2671 today", "ring <PHONE> today", "PHONE"),
    ("US (415) 555-2671 or 415-555-0123", "US <PHONE> or <PHONE>", "PHONE"),
    ("手机13800138000联系", "手机<PHONE>联系", "PHONE"),
    ("tel +86 138 0013 8000 / +8613912345678", "tel <PHONE> / <PHONE>", "PHONE"),
    ("call 139-1234-5678.", "call <PHONE>.", "PHONE"),
    ("酒店订房电话：0311-86911999。", "酒店订房电话：<PHONE>。", "PHONE"),  # a Chinese landline (ChnSentiCorp)
    ("订房（010）62345678或(0594) 2817777", "订房<PHONE>或<PHONE>", "PHONE"),
    ("pay DE89 3704 0044 0532 0130 00 EUR", "pay <IBAN> EUR", "IBAN"),  # a word after the number stays
    ("IBAN: GB82WEST12345698765432.", "IBAN: <IBAN>.", "IBAN"),
    ("à FR14 2004 1010 0505 0001 3M02 606 et", "à <IBAN> et", "IBAN"),
    ("BE68 5390 0754 7034 BANK", "<IBAN> BANK", "IBAN"),  # a 4-letter word read as a group is given back
    ("账户NL91ABNA0417164300转账", "账户<IBAN>转账", "IBAN"),
    ("host 192.168.1.10 down", "host <IP> down", "IP"),
    ("at 10.0.0.1.", "at <IP>.", "IP"),
    ("v6 2001:db8::8a2e:370:7334 and fe80::1: up", "v6 <IP> and <IP>: up", "IP"),
    ("version 1.2.3.4 shipped", "version <IP> shipped", "IP"),  # documented: a valid dotted quad is scrubbed
])
def test_each_kind_is_replaced(text, expected, kind):
    scrubbed, counts = scrub_pii(text)
    assert scrubbed == expected
    assert counts == {kind: expected.count(f"<{kind}>")}


@pytest.mark.parametrize("text", [
    "order 4155552671 shipped",  # a 10-digit order number is not a phone
    "order 1390012345 shipped",  # 10 digits that start like a Chinese mobile
    "4111 1111 1111 1112",  # 16 digits, Luhn-invalid: not a card
    "cancel purchase 113542617735902",  # Luhn-valid, but no card issuer's prefix: an order number
    "ref 3782822463100050",  # an Amex prefix with 16 digits
    "ref 110105194912310021",  # 18 digits, wrong ID check digit (and Luhn-invalid)
    "999.1.1.1 and 256.0.0.1",  # octets over 255
    "release v1.2.3.4 and 1.2.3.4.5",  # glued to a letter / a five-part version
    "meet at 12:30:45 on 2024-01-15",  # a time and a date
    "on 2008-10-10 12345678 and 1999-2004 page 001-1234567",  # no 0xx(x) area code before 7-8 digits
    "mac 00:1A:2B:3C:4D:5E",  # a MAC address is not IPv6
    "std::vector<int> and a::b",
    "total 1234567890123 units",  # 13 digits, Luhn-invalid
    "price +12 points, +1234567",  # too few digits for an international number
    "no at-sign here, user at example dot com",
    "x" * 65 + "@example.com",  # a local part over RFC 5321's 64 characters is no address
    "hash deadbeefdeadbeef:cafe::1",  # a group of more than 4 hex digits is no IPv6 address
    "DE89 3704 0044 0532 0130 01",  # wrong check digits
    "DE89 3704 0044 0532 0130 00BANK",  # glued to a word: not where the country's IBAN ends
    "part AB12 3456 7890 1234 5678",  # no such country
    "model XK20ABCD1234EFGH5678",  # a country's shape, but not its length
])
def test_near_misses_survive(text):
    assert scrub_pii(text) == (text, {})


def test_counts_add_up_across_kinds():
    text = ("Contact a@b.io or c@d.org, +44 20 7946 0958, 13800138000; card 4111111111111111; "
            "server 8.8.8.8; ID 11010519491231002X.")
    scrubbed, counts = scrub_pii(text)
    assert counts == {"EMAIL": 2, "PHONE": 2, "CARD": 1, "IP": 1, "ID": 1}
    assert scrubbed == "Contact <EMAIL> or <EMAIL>, <PHONE>, <PHONE>; card <CARD>; server <IP>; ID <ID>."


def test_existing_placeholders_are_not_counted_again():
    assert scrub_pii("already <EMAIL> and <PHONE>") == ("already <EMAIL> and <PHONE>", {})


def test_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert valid_cn_id("11010519491231002X") and valid_cn_id("11010519491231002x")
    assert not valid_cn_id("110105194912310021") and not valid_cn_id("11010519491231002")
    assert valid_iban("GB82WEST12345698765432") and valid_iban("CH9300762011623852957")
    assert not valid_iban("GB82WEST12345698765433") and not valid_iban("GB82WEST1234569876543")


def test_real_text_has_few_false_positives(shared_data):
    """Movie reviews and financial tweets hold numbers, prices and versions but (almost) no PII."""
    tweets = (shared_data / "twitter_financial_news_sentiment" / "sent_train.csv").read_text(encoding="utf-8")
    reviews = (shared_data / "mr_polarity" / "rt-polarity.all").read_text(encoding="cp1252")
    for text in (tweets, reviews):
        _, counts = scrub_pii(text)
        assert sum(counts.values()) <= 5, counts
