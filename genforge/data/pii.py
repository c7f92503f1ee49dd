"""PII scrubbing: replace e-mails, phone numbers, ID/card numbers and IP addresses with typed placeholders.

One precompiled regex per kind finds candidates; candidates that carry a checksum or a range are
validated before they are replaced, so look-alike numbers survive:
  <EMAIL>  user@example.com, the part before "@" at most 64 characters (RFC 5321)
  <ID>     Chinese resident ID: 18 characters, a plausible birth date, valid ISO 7064 MOD 11-2 check digit
  <IBAN>   bank account (ISO 13616): a country's code and IBAN length, valid MOD 97-10 check digits, printed
           in groups of 4 ("DE89 3704 0044 0532 0130 00") or written whole
  <CARD>   payment card: 13-19 digits (spaces/dashes allowed), a card issuer's prefix, valid Luhn checksum
  <PHONE>  international "+CC ..." (8-15 digits in all), North-American "(415) 555-2671" / "415-555-2671",
           Chinese mobile 1[3-9]x + 8 digits, with or without +86; Chinese landline: area code 0xx(x) then a
           separator or parentheses, then 7-8 digits ("0311-86911999", "(010)12345678"), as hotel and shop
           reviews cite them. A bare 10-digit number is NOT a phone.
  <IP>     IPv4 with every octet <= 255; IPv6 as validated by the `ipaddress` module.
Decision on version strings: a dotted quad that is a valid IPv4 ("1.2.3.4") is scrubbed, since text
cannot tell a version from an address; one glued to a letter ("v1.2.3.4") is not.

Digit patterns use ASCII-only boundaries (not \\b): in Chinese text a number sits directly between
letters ("手机13800138000联系"), which \\b would not separate. Each pattern starts with a character
class and puts the boundary look-behind second, so `re` skips ahead cheaply (2-4x faster scans).
Kinds run in the order above, most specific first, so an 18-character ID is never taken for a card.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

KINDS = ("EMAIL", "ID", "IBAN", "CARD", "PHONE", "IP")

EMAIL_LOCAL_MAX = 64  # RFC 5321; the bound also caps how far a redacting stream must look ahead
_EMAIL = re.compile(rf"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{{1,{EMAIL_LOCAL_MAX}}}"
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_ID = re.compile(r"[1-9](?<![0-9A-Za-z].)\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                 r"(?![0-9A-Za-z])")
# Groups of 4 after the country code and check digits, a shorter last one: an account number is read whole and
# a word printed after it ("... 0130 00 EUR") is not, as `_iban` cuts the match at the country's IBAN length.
_IBAN = re.compile(r"[A-Z](?<![0-9A-Za-z].)[A-Z]\d{2}(?: ?[0-9A-Z]{4}){2,7}(?: ?[0-9A-Z]{1,3})?(?![0-9A-Za-z])")
_CARD = re.compile(r"\d(?<![0-9A-Za-z+-].)(?:[ -]?\d){12,18}(?![0-9A-Za-z-])")
_PHONE = re.compile(
    r"(?=[+(（\d])(?<![0-9A-Za-z+])(?:"
    r"(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}"  # Chinese mobile
    r"|\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"  # international, +CC first
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # North American (415) 555-2671
    r"|\d{3}-\d{3}-\d{4}"  # North American 415-555-2671
    r"|(?:0\d{2,3}[ -]|[(（]0\d{2,3}[)）][ -]?)[2-9]\d{6,7}"  # Chinese landline 0311-86911999, (010)12345678
    r")(?![0-9])"
)
_IPV4 = re.compile(r"\d(?<![0-9A-Za-z.].)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\.?\d)")
# Ends on a hex digit, so "fe80::1:" at the end of a clause is found without its colon. The look-ahead
# reads at most two groups of 4 (a longer group is no IPv6 address), so a long hex word is not read whole.
_IPV6 = re.compile(r"(?=[0-9A-Fa-f:])(?<![0-9A-Za-z:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{1,38}[0-9A-Fa-f]"
                   r"(?![0-9A-Za-z.]|:[0-9A-Fa-f:])")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_cn_id(number: str) -> bool:
    """ISO 7064 MOD 11-2 check digit of an 18-character Chinese resident ID number."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# IBAN length per country code (SWIFT's IBAN registry): with the check digits, one random string in 97 passes;
# the length rules out nearly all of those.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def valid_iban(iban: str) -> bool:
    """ISO 13616: the country's length, and the number read with its first 4 characters moved to the end and
    letters as 10..35 is 1 modulo 97."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])) % 97 == 1


def _iban(match: re.Match) -> str:
    """`<IBAN>` for the match's first `IBAN_LENGTHS[country]` characters when they are a valid IBAN that ends
    where a group does; what the pattern read beyond them (a word printed after the number) is kept."""
    text = match.group()
    length = IBAN_LENGTHS.get(text[:2], 0)
    ends = [i + 1 for i, ch in enumerate(text) if ch != " "]
    if len(ends) < length:
        return text
    end = ends[length - 1]
    if end < len(text) and text[end] != " " or not valid_iban(text[:end].replace(" ", "")):
        return text
    return "<IBAN>" + text[end:]


# Issuer prefixes of payment cards (Visa; Mastercard; Amex; Diners; JCB; Discover, UnionPay, RuPay; Maestro;
# Mir): a Luhn digit alone passes one number in ten, so order and tracking numbers would be taken for cards.
_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)|3[0-9]|6[0245]|5[06-8]|6[37]|220[0-4]")


def _card(match: str) -> bool:
    digits = match.replace(" ", "").replace("-", "")
    if not (13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits)):
        return False
    return len(digits) == 15 if digits[:2] in ("34", "37") else True  # Amex numbers have 15 digits


def _phone(match: str) -> bool:
    if not match.startswith("+"):
        return True  # the national shapes are exact by construction
    return 8 <= sum(ch.isdigit() for ch in match) <= 15  # E.164 allows at most 15 digits


def _ipv4(match: str) -> bool:
    return all(int(octet) <= 255 for octet in match.split("."))


def _ipv6(match: str) -> bool:
    groups = [g for g in match.split(":") if g]
    if len(groups) < 2 or sum(map(len, groups)) < 4:
        return False  # "::1", "a::b" (C++ scopes, ratios): too little to be worth calling an address
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _replacer(tag: str, valid: Callable[[str], bool] | None) -> str | Callable[[re.Match], str]:
    if valid is None:
        return tag
    return lambda m: tag if valid(m.group()) else m.group()


# (tag, pattern, replacement, needle, needs a digit): without the needle substring (and a digit, where
# needed) the regex cannot match, so most documents skip most scans.
_RULES = (
    ("<EMAIL>", _EMAIL, _replacer("<EMAIL>", None), "@", False),
    ("<ID>", _ID, _replacer("<ID>", valid_cn_id), "", True),
    ("<IBAN>", _IBAN, _iban, "", True),
    ("<CARD>", _CARD, _replacer("<CARD>", _card), "", True),
    ("<PHONE>", _PHONE, _replacer("<PHONE>", _phone), "", True),
    ("<IP>", _IPV4, _replacer("<IP>", _ipv4), ".", True),
    ("<IP>", _IPV6, _replacer("<IP>", _ipv6), ":", False),
)
_DIGIT = re.compile(r"\d")


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """Text with every validated PII hit replaced by `<KIND>`, and the number of hits per kind."""
    counts: dict[str, int] = {}
    has_digit = _DIGIT.search(text) is not None
    for tag, pattern, replacement, needle, needs_digit in _RULES:
        if (needs_digit and not has_digit) or needle not in text:
            continue
        before = text.count(tag)
        text = pattern.sub(replacement, text)
        if hits := text.count(tag) - before:
            kind = tag[1:-1]
            counts[kind] = counts.get(kind, 0) + hits
    return text, counts
