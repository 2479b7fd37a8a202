"""PII redaction of free text: e-mails, phones, card numbers, IBANs and token-bearing URLs.

Pure and vectorised: e-mails and URLs are found by Polars (Rust regex) expressions over the whole
column; only texts that still hold a long enough digit run after that go through Python-level
validation (libphonenumber, Luhn, IBAN mod-97), once per distinct text.

Detection order, and why (each stage sees the output of the previous one):

1. URLs carrying tokens are replaced whole first. Redacting an e-mail or a number inside one first
   would put a ``[`` into it, which ends the URL match, and leave the token after it visible.
2. E-mails next: a local part may hold a digit run (``jane.4155552671@x.com``) that the number
   stages would half-redact, leaving a broken address behind.
3. IBANs before cards and phones: an IBAN's digit tail (``1234 5698 7654 32``) can pass Luhn or
   parse as a phone number.
4. Cards before phones: a grouped 16-digit card is a "possible" phone number in some regions,
   and libphonenumber may match pieces of it.
5. Phones last, on what is left.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
import polars as pl
from phonenumbers import Leniency, ValidationResult
from stdnum import iban, luhn

PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "url": "[URL]",
}
_NATIONAL = phonenumbers.PhoneNumberFormat.NATIONAL
_KINDS = sorted(PLACEHOLDERS)  # the order of the ``pii`` lists

# ---- URLs (Rust regex) -------------------------------------------------------------------------
# Trailing sentence punctuation is not part of a URL ("see https://x.example/a.").
_URL = (
    r"(?i:(?-u:\b)(?:https?://|www\.)[^\s<>\"'\[\]{}|\\^`]*"
    r"[^\s<>\"'\[\]{}|\\^`.,;:!?)])"
)
_URL_HINT = r"(?i)https?://|www\."
# A text cut into URLs and the rest: a URL can only start at h/w, so runs without those letters
# are taken whole and the letters one at a time. Joining the pieces gives the text back.
_PIECES = _URL + r"|[^hHwW]+|(?s:.)"
# Parameter names that suggest a secret: "strong" words anywhere in the name (accessToken,
# X-Amz-Signature), "weak" ones (sid, code, key) only as a whole part of it, so that e.g.
# ``inside=`` or ``monkey=`` do not count.
_STRONG = r"token|secret|api[_-]?key|signature|password|passwd|passphrase|credentials?|bearer"
_WEAK = (
    r"key|sig|sid|code|auth|session|sessionid|pwd|pass|otp|reset|jwt|hash|nonce|pin|access|login"
)
_SECRET_PARAM = (
    rf"(?i)[?&;#](?:[a-z0-9_.-]*(?:{_STRONG})[a-z0-9_.-]*"
    rf"|(?:[a-z0-9]+[_.-])*(?:{_WEAK})(?:[_.-][a-z0-9]+)*)="
)
_USERINFO = r"(?i)^https?://[^/?#\s@]*:[^/?#\s@]*@"  # user:password@host
_HOST = r"(?i)^(?:https?://|www\.)[^/?#]*"
_LONG_SEGMENT = r"[A-Za-z0-9_-]{16,}"
# Two letter/digit switches tell a random token from a slug: "black-friday-2025-deals" has none
# (words and numbers are hyphen-separated), "AbCdEf0123456789xyzQ" has two.
_SWITCH = r"[A-Za-z][0-9]|[0-9][A-Za-z]"

# ---- E-mails (Rust regex) ----------------------------------------------------------------------
_EMAIL = r"(?i)[\p{L}\p{N}._%+-]+@(?:[\p{L}\p{N}-]+\.)+[a-z]{2,24}(?-u:\b)"
# Obfuscated forms: "jane dot doe at example dot com", "jane[at]example[dot]com",
# "jane (at) example (dot) com", "jane @ example . com", "j.doe at example.com". Prose uses "at"
# and dots too ("find it at amazon.com", "cheaper @ vitacost.com", "amazed at how.easy"), so a
# plain "at" or a spaced "@" counts only when something else says "address": a bracketed at, a
# spelled-out or spaced dot in the domain, or a local part with a dot, "_", "+" or a digit.
# The domain must look like one: labels joined by dots ending in a 2-24 letter TLD in one case
# ("at home.Thanks" is a missing space); the first label is not "www" and the tail is not
# followed by "/" or by more domain ("details at www.example.com/returns" is a site).
_DOT_WORD = r"(?:\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*|\s+dot\s+)"
_STRONG_AT = r"\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*"
_WEAK_AT = r"(?:\s*@\s*|\s+at\s+)"
_LOCAL_WORD = r"[\p{L}\p{N}_%+-]+"
_JOIN = rf"(?:\.+|{_DOT_WORD})"
_LOCAL = rf"{_LOCAL_WORD}(?:{_JOIN}{_LOCAL_WORD})*"
# Joined words, or one word holding "_", "+" or a digit; starting with a letter either way, so
# that "3.99 at amazon.com" and "bought 2 at shop.com" stay prose.
_ADDRESS_LOCAL = (
    rf"(?:\p{{L}}[\p{{L}}\p{{N}}_%+-]*(?:{_JOIN}{_LOCAL_WORD})+"
    rf"|\p{{L}}[\p{{L}}\p{{N}}%-]*[_+0-9][\p{{L}}\p{{N}}_%+-]*)"
)
_LABEL = r"[\p{L}\p{N}-]+"
_LC = r"[\p{L}\p{N}-]"
_NOT_W = r"[\p{L}\p{N}\-&&[^wW]]"  # a label character other than w
_FIRST_LABEL = (
    rf"(?:{_LC}{{1,2}}|{_LC}{{4,}}|{_NOT_W}{_LC}{{2}}|[wW]{_NOT_W}{_LC}|[wW]{{2}}{_NOT_W})"
)
_DOMAIN_DOT = rf"(?:\.|\s+\.\s+|{_DOT_WORD})"
_STRONG_DOT = rf"(?:\s+\.\s+|{_DOT_WORD})"
_TLD = r"(?-i:[a-z]{2,24}|[A-Z]{2,24})"
_DOMAIN = rf"{_FIRST_LABEL}(?:{_DOMAIN_DOT}{_LABEL})*{_DOMAIN_DOT}{_TLD}"
_OBFUSCATED_DOMAIN = (
    rf"{_FIRST_LABEL}(?:{_DOMAIN_DOT}{_LABEL})*{_STRONG_DOT}(?:{_LABEL}{_DOMAIN_DOT})*{_TLD}"
)
_LOOSE_EMAIL = (
    rf"(?i)(?:{_LOCAL}{_STRONG_AT}{_DOMAIN}|{_LOCAL}{_WEAK_AT}{_OBFUSCATED_DOMAIN}"
    rf"|{_ADDRESS_LOCAL}{_WEAK_AT}{_DOMAIN})"
    r"(\.?(?:[^\p{L}\p{N}/.@_-]|$))"  # the tail, put back after the placeholder
)

# ---- Numbers: pre-filter (Rust regex), validation (Python) --------------------------------------
# Dates and times are blanked before the pre-filter only (not in the output), so that texts whose
# sole long digit run is "2026-11-30" skip the slow Python stage.
_DATE_TIME = (
    r"(?-u:\b)(?:[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}"
    r"|[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?)(?-u:\b)"
)
_DIGIT_RUN = r"[0-9](?:[\s().\-/]{0,3}[0-9]){6,}"  # >= 7 digits, separators allowed

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")
_IBAN_BODY = re.compile(r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}")
# Not after "+": "+44 20 ..." is a phone number.
_DIGIT_GROUPS = re.compile(r"(?<![\w+])[0-9]+(?:[ -][0-9]+)*(?!\w)")
_GROUP = re.compile(r"[0-9]+")
_IDD_00 = re.compile(r"(?<![\w+])(?<![0-9][ ./)-])00(?=[1-9])")  # not inside a number: "312 001"
_DATE_SHAPE = re.compile(r"[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}")
_PHONE_PUNCT = re.compile(r"[+()\-./\s]")
_DIGIT = re.compile(r"[0-9]")


def _iban_spans(text: str) -> list[tuple[int, int]]:
    """Spans of IBANs with a valid checksum and country format, longest reading first."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for start in _IBAN_START.finditer(text):
        if start.start() < pos:
            continue
        body = _IBAN_BODY.match(text, start.start())
        if body is None:
            continue
        s = body.group()
        # The greedy body may run into the next word ("... 7654 32 thanks"), so try every end
        # that falls on a group boundary, longest first.
        ends = [
            i + 1
            for i in range(len(s) - 1, 14, -1)
            if s[i] != " " and (i + 1 == len(s) or s[i + 1] == " ")
        ]
        for end in ends:
            after = start.start() + end
            if after < len(text) and text[after].isalnum():
                continue
            if iban.is_valid(s[:end].replace(" ", "")):
                spans.append((start.start(), after))
                pos = after
                break
    return spans


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Spans of 13-19 digit numbers, grouped as cards are, that pass the Luhn check."""
    spans: list[tuple[int, int]] = []
    for run in _DIGIT_GROUPS.finditer(text):
        groups = [
            (run.start() + g.start(), run.start() + g.end()) for g in _GROUP.finditer(run.group())
        ]
        i = 0
        while i < len(groups):
            found = None
            for j in range(len(groups) - 1, i - 1, -1):
                sizes = [e - s for s, e in groups[i : j + 1]]
                # Cards are printed 4-4-4-4, 4-6-5, 4-4-4-4-3 ...: every group but the last has 4-6
                # digits. That keeps "2026-11-30 12345" (a date and a number) from being one.
                if not 13 <= sum(sizes) <= 19 or any(not 4 <= n <= 6 for n in sizes[:-1]):
                    continue
                digits = "".join(text[s:e] for s, e in groups[i : j + 1])
                # No issuer number starts with 0; national phone numbers often do.
                if digits[0] != "0" and luhn.is_valid(digits):
                    found = j
                    break
            if found is None:
                i += 1
            else:
                spans.append((groups[i][0], groups[found][1]))
                i = found + 1
    return spans


@functools.cache
def _national_forms(region: str) -> tuple[str, bool]:
    """The region's trunk prefix, and whether national numbers are written with it."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:  # redacted_text refuses such a region before it gets here
        raise ValueError(f"phone_region {region!r} is not a region libphonenumber knows")
    prefix = metadata.national_prefix or ""
    example = phonenumbers.example_number(region)
    if not prefix or example is None:
        return prefix, False
    written = phonenumbers.format_number(example, _NATIONAL)
    return prefix, "".join(_DIGIT.findall(written)).startswith(prefix)


def _phone_spans(text: str, region: str) -> list[tuple[int, int]]:
    """Spans of phone numbers, international or national to ``region``."""
    # "0049 30 ..." is international from most of the world but not from the US (011), so read a
    # leading 00 as "+". " +" keeps every offset; the span is widened back over the first 0.
    plus = _IDD_00.sub(" +", text)
    region_code = phonenumbers.country_code_for_region(region)
    prefix, prefix_written = _national_forms(region)
    spans: list[tuple[int, int]] = []
    # Leniency POSSIBLE (length-based), not VALID (number-range based): VALID rejects numbers
    # people really write, such as "(555) 123-4567" (555 is no assigned US area code) and the
    # UK's reserved "07700 900123", and range metadata lags behind new allocations. POSSIBLE's
    # false positives (order numbers, "1 299 000") are cut by the checks below.
    for m in phonenumbers.PhoneNumberMatcher(plus, region, leniency=Leniency.POSSIBLE):
        raw = m.raw_string
        digits = "".join(_DIGIT.findall(raw))
        if len(digits) < 7 or _DATE_SHAPE.fullmatch(raw):
            continue
        # A full number, not one only dialable locally (a bare 7-digit run is an order number
        # more often than a phone).
        if phonenumbers.is_possible_number_with_reason(m.number) != ValidationResult.IS_POSSIBLE:
            continue
        national = not raw.startswith("+") and m.number.country_code == region_code
        if national:
            # Written as it is dialled at home: with the trunk prefix where the region writes one
            # ("020 7946 0958", not "20 7946 0958"; in Germany "48213377" is no phone number),
            # with or without it where that is optional (the US "1"). A valid number's own
            # national format says so per range (Chinese mobiles go without the 0 that landlines
            # take); for other numbers the region's example number does.
            nsn = phonenumbers.national_significant_number(m.number)
            valid = phonenumbers.is_valid_number(m.number)
            if valid:
                national_format = phonenumbers.format_number(m.number, _NATIONAL)
                forms = {"".join(_DIGIT.findall(national_format)), prefix + nsn}
            else:
                forms = {prefix + nsn} if prefix_written else {nsn, prefix + nsn}
            if digits not in forms:
                continue
            # An unformatted run ("order 1234567890") must moreover be a valid number; written
            # with spaces, dashes or brackets it reads as a phone.
            if not valid and not _PHONE_PUNCT.search(raw):
                continue
        # Where "00" became " +", the text has the second 0 under the "+".
        widened = plus[m.start] == "+" and text[m.start] == "0"
        spans.append((m.start - 1 if widened else m.start, m.end))
    return spans


def _replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    for start, end in reversed(spans):
        text = text[:start] + placeholder + text[end:]
    return text


def _redacted_numbers(text: str, region: str) -> tuple[str, bool, bool, bool]:
    """The text with IBANs, cards and phones replaced, and whether each (that order) was in it."""
    found = []
    for kind, spans_of in (
        ("iban", _iban_spans),
        ("card", _card_spans),
        ("phone", lambda t: _phone_spans(t, region)),
    ):
        spans = spans_of(text)
        found.append(bool(spans))
        text = _replace_spans(text, spans, PLACEHOLDERS[kind])
    return text, found[0], found[1], found[2]


def _redacted_urls(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (``_row``, ``text``) with token-bearing URLs replaced and ``_url`` flags."""
    has_url = frame.filter(pl.col("text").str.contains(_URL_HINT))
    if has_url.is_empty():
        return frame.with_columns(_url=pl.lit(False))
    piece = pl.col("piece")
    is_url = piece.str.contains(r"(?i)^(?:https?://|www\.)")
    path = piece.str.replace(_HOST, "")
    token_segment = (
        path.str.extract_all(_LONG_SEGMENT)
        .list.eval(pl.element().str.count_matches(_SWITCH) >= 2)
        .list.any()
    )
    secret = is_url & (
        piece.str.contains(_SECRET_PARAM) | piece.str.contains(_USERINFO) | token_segment
    )
    pieces = (
        has_url.select("_row", piece=pl.col("text").str.extract_all(_PIECES))
        .explode("piece")
        .with_columns(_url=secret.fill_null(False))
        .group_by("_row", maintain_order=True)
        .agg(
            _redacted=pl.when("_url")
            .then(pl.lit(PLACEHOLDERS["url"]))
            .otherwise(piece)
            .str.join(""),
            _url=pl.col("_url").any(),
        )
    )
    return (
        frame.join(pieces, on="_row", how="left", maintain_order="left")
        .with_columns(
            text=pl.when("_url").then("_redacted").otherwise("text"),
            _url=pl.col("_url").fill_null(False),
        )
        .drop("_redacted")
    )


def redacted_text(texts: pl.Series, phone_region: str = "US") -> pl.DataFrame:
    """Each text with e-mails, phones, cards, IBANs and token URLs as placeholders; kinds found."""
    region = phone_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"phone_region {phone_region!r} is not a region libphonenumber knows")
    frame = pl.DataFrame({"text": texts.cast(pl.String)}).with_row_index("_row")
    frame = _redacted_urls(frame)

    text = pl.col("text")
    frame = frame.with_columns(
        text.str.replace_all(_EMAIL, PLACEHOLDERS["email"])
        .str.replace_all(_LOOSE_EMAIL, PLACEHOLDERS["email"] + "${1}")
        .alias("_after_email")
    ).with_columns(
        _email=(pl.col("_after_email") != text).fill_null(False), text=pl.col("_after_email")
    )

    candidate = text.str.replace_all(_DATE_TIME, " ").str.contains(_DIGIT_RUN).fill_null(False)
    unique = frame.filter(candidate).get_column("text").unique(maintain_order=True).to_list()
    results = [_redacted_numbers(t, region) for t in unique]
    numbers = pl.DataFrame(
        {
            "text": unique,
            "_numbers": [r[0] for r in results],
            "_iban": [r[1] for r in results],
            "_card": [r[2] for r in results],
            "_phone": [r[3] for r in results],
        },
        schema={
            "text": pl.String,
            "_numbers": pl.String,
            "_iban": pl.Boolean,
            "_card": pl.Boolean,
            "_phone": pl.Boolean,
        },
    )
    frame = frame.join(numbers, on="text", how="left", maintain_order="left").with_columns(
        pl.coalesce("_numbers", "text").alias("text"),
        *(pl.col(f"_{k}").fill_null(False) for k in ("iban", "card", "phone")),
    )
    pii = pl.concat_list([pl.when(f"_{k}").then(pl.lit(k)) for k in _KINDS]).list.drop_nulls()
    return frame.select("text", pii.alias("pii"))
