"""PII redaction: a corpus of tricky literal cases, then properties over random surrounding text."""

from __future__ import annotations

import phonenumbers
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from stdnum import luhn

from nightowl.tasks.feedback.redact import PLACEHOLDERS, redacted_text


def _one(text: str | None, region: str = "US") -> tuple[str | None, list[str]]:
    """The redacted text and the kinds found, for a single text."""
    out = redacted_text(pl.Series([text], dtype=pl.String), phone_region=region)
    return out["text"][0], out["pii"][0].to_list()


# ---- the corpus: (text, region, redacted text, kinds) --------------------------------------------
EMAILS = [
    ("mail jane.doe@example.com please", "mail [EMAIL] please"),
    ("JANE_DOE+tag@sub.example.co.uk", "[EMAIL]"),
    ("write to jane dot doe at example dot com.", "write to [EMAIL]."),
    ("jane[at]example[dot]com", "[EMAIL]"),
    ("reach jane (at) example (dot) com today", "reach [EMAIL] today"),
    ("jane @ example . com", "[EMAIL]"),
    ("it is j.doe at example.com, thanks", "it is [EMAIL], thanks"),
    ("it is jane_doe at example.com", "it is [EMAIL]"),
    ("JANE AT EXAMPLE DOT COM", "[EMAIL]"),
    ("josé@exämple.de", "[EMAIL]"),
    ("me@x.io or j@y.co.uk", "[EMAIL] or [EMAIL]"),
    # The digits in the local part are not left behind as a phone or a broken address.
    ("jane.4155552671@example.com", "[EMAIL]"),
]
PHONES = [
    ("call +44 20 7946 0958 now", "US", "call [PHONE] now"),
    ("+1 (415) 555-2671", "US", "[PHONE]"),
    ("0049 30 12345678", "US", "[PHONE]"),
    ("ring 0049 30 12345678.", "GB", "ring [PHONE]."),
    ("+49-30-1234567", "US", "[PHONE]"),
    ("(555) 123-4567", "US", "[PHONE]"),
    ("555-123-4567 after 6", "US", "[PHONE] after 6"),
    ("1 415 555 2671", "US", "[PHONE]"),
    ("011 44 20 7946 0958", "US", "[PHONE]"),
    ("07700 900123", "GB", "[PHONE]"),
    ("020 7946 0958", "GB", "[PHONE]"),
    ("+33 6 12 34 56 78", "US", "[PHONE]"),
    ("+91 98765 43210", "US", "[PHONE]"),
    ("+14155552671", "US", "[PHONE]"),
]
CARDS = [
    ("card 4111 1111 1111 1111.", "card [CARD]."),
    ("5500-0000-0000-0004", "[CARD]"),
    ("378282246310005", "[CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("my card: 4111 1111 1111 1111, exp 12/27", "my card: [CARD], exp 12/27"),
    ("on 2026-11-30 4111 1111 1111 1111", "on 2026-11-30 [CARD]"),
]
IBANS = [
    ("GB82 WEST 1234 5698 7654 32 thanks", "[IBAN] thanks"),
    ("DE89370400440532013000", "[IBAN]"),
    ("iban: gb82west12345698765432.", "iban: [IBAN]."),
]
URLS = [
    ("see https://shop.example/reset/AbCdEf0123456789xyzQ.", "see [URL]."),
    ("https://x.example/a?token=abc&b=1", "[URL]"),
    ("(https://x.example/p?api_key=k1)", "([URL])"),
    ("https://x.example/p?page=2&accessToken=zz", "[URL]"),
    ("https://x.example/p?X-Amz-Signature=ab12", "[URL]"),
    ("https://shop.example/a?session_id=x", "[URL]"),
    ("www.example.com/returns?code=ABC", "[URL]"),
    ("https://x.example/login#access_token=abc", "[URL]"),
    ("https://user:hunter2@example.com/x", "[URL]"),
    # The token URL goes whole, e-mail and all: redacting the e-mail first would cut the URL.
    ("https://x.com/unsub?email=jane@x.com&sig=abc123", "[URL]"),
]
NOT_PII = [
    # Prose that names a shop's site: an address needs more than "at" and a domain.
    "find these at amazon.com",
    "here at Amazon.com, cheaper @ vitacost.com",
    "£3.99 at amazon.com",
    "bought 2 at shop.com",
    "it is jane at example.com",  # could be either: prose wins, the raw layer keeps it
    "I looked at the box",
    "meet at noon",
    "I am at home.Thanks",
    "https://example.com/help",
    "see www.example.com/returns",
    "details at www.example.com/returns",
    "Returns at www.example.com.",
    "https://shop.example/blog/black-friday-2025-deals",
    "https://shop.example/a?page=2&sort=asc",
    "(https://x.example/help).",
    "delivered 2026-11-30, due 30/11/2026",
    "at 10:30 or 14:05:59",
    "$1,299.00 and £12.50, €1.299,00",
    "2 x 500g, 3x 250 ml",
    "order 1234567890123",
    "order #1234567890",
    "order 48213377 arrived 2026-11-30 14:05",
    "4111 1111 1111 1112",
    "ref 1234-5678-9012",
    "tracking 1Z999AA10123456784",
    "since 1999, in 2026",
    "only 3 left, 12 in stock",
    "price 1 299 000",
    "SW1A 1AA",
    "v2.3.1 and 10.4.12.1",
    "50% off, 12.5 %",
    "GB83 WEST 1234 5698 7654 32",  # IBAN-shaped, bad checksum
    "name@example.c",
]
CORPUS = [
    *((text, "US", out, ["email"]) for text, out in EMAILS),
    *((text, region, out, ["phone"]) for text, region, out in PHONES),
    *((text, "US", out, ["card"]) for text, out in CARDS),
    *((text, "US", out, ["iban"]) for text, out in IBANS),
    *((text, "US", out, ["url"]) for text, out in URLS),
    *((text, region, text, []) for text in NOT_PII for region in ("US", "GB", "DE")),
    (
        "https://x.com/?email=jane@x.com&ref=1",
        "US",
        "https://x.com/?email=[EMAIL]&ref=1",
        ["email"],
    ),
    (
        "contact: jane@example.com, +44 20 7946 0958, 4111-1111-1111-1111",
        "US",
        "contact: [EMAIL], [PHONE], [CARD]",
        ["card", "email", "phone"],
    ),
]


@pytest.mark.parametrize(("text", "region", "expected", "kinds"), CORPUS)
def test_corpus(text: str, region: str, expected: str, kinds: list[str]) -> None:
    assert _one(text, region) == (expected, kinds)


def test_national_numbers_are_read_in_the_given_region() -> None:
    # A UK mobile written nationally is no US number; the US default does not guess.
    assert _one("07700 900123", "US") == ("07700 900123", [])
    assert _one("(555) 123-4567", "GB") == ("(555) 123-4567", [])
    assert _one("07700 900123", "gb") == ("[PHONE]", ["phone"])


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="XX"):
        redacted_text(pl.Series(["hi"]), phone_region="XX")


def test_frame_keeps_length_order_nulls_and_unicode() -> None:
    texts = pl.Series(
        [None, "", "héllo 😀 你好 мир, مرحبا", "mail a@b.co", None, "नमस्ते 🙏🏽 +91 98765 43210"]
    )
    expected = pl.DataFrame(
        {
            "text": [
                None,
                "",
                "héllo 😀 你好 мир, مرحبا",
                "mail [EMAIL]",
                None,
                "नमस्ते 🙏🏽 [PHONE]",
            ],
            "pii": [[], [], [], ["email"], [], ["phone"]],
        },
        schema={"text": pl.String, "pii": pl.List(pl.String)},
    )
    assert_frame_equal(redacted_text(texts), expected)


def test_empty_and_all_null_series() -> None:
    schema = {"text": pl.String, "pii": pl.List(pl.String)}
    assert_frame_equal(redacted_text(pl.Series([], dtype=pl.String)), pl.DataFrame(schema=schema))
    assert_frame_equal(
        redacted_text(pl.Series([None, None])),
        pl.DataFrame({"text": [None, None], "pii": [[], []]}, schema=schema),
    )


def test_repeated_texts_get_the_same_answer() -> None:
    # Validation runs once per distinct text; every copy must still get its result.
    out = redacted_text(pl.Series(["call 555-123-4567", "x", "call 555-123-4567"]))
    assert out["text"].to_list() == ["call [PHONE]", "x", "call [PHONE]"]
    assert out["pii"].to_list() == [["phone"], [], ["phone"]]


def test_placeholders() -> None:
    assert PLACEHOLDERS == {
        "email": "[EMAIL]",
        "phone": "[PHONE]",
        "card": "[CARD]",
        "iban": "[IBAN]",
        "url": "[URL]",
    }


# ---- properties ------------------------------------------------------------------------------
# Prose around the PII: letters (some not Latin), spaces and punctuation, no digits or "@". The
# words "at" and "dot" are left out because next to an address they are part of its syntax.
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüßçжфλ你好😀"
_PROSE = st.text(alphabet=_LETTERS + " ,;:!?'\"-", max_size=30).filter(
    lambda s: not ({"at", "dot"} & set(s.lower().split()))
)
_LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True).filter(lambda s: s != "www")


@st.composite
def _emails(draw: st.DrawFn) -> str:
    local = draw(st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,10}[a-z0-9]", fullmatch=True))
    labels = draw(st.lists(_LABEL, min_size=1, max_size=3))
    tld = draw(st.from_regex(r"[a-z]{2,6}", fullmatch=True))
    at, dot = draw(
        st.sampled_from(
            [
                ("@", "."),
                (" at ", " dot "),
                (" at ", "."),
                ("[at]", "[dot]"),
                (" (at) ", " (dot) "),
                (" @ ", " . "),
            ]
        )
    )
    if (at, dot) == (" at ", "."):  # prose writes that too: only an address-like name counts
        local = f"j.{local}"
    return local + at + dot.join([*labels, tld])


@st.composite
def _cards(draw: st.DrawFn) -> str:
    body = draw(st.from_regex(r"[1-9][0-9]{11,17}", fullmatch=True))
    number = body + luhn.calc_check_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


_REGIONS = ["US", "GB", "DE", "FR", "IN", "CN", "BR", "AR", "JP", "AU", "ES", "IT", "NL", "BY"]
_REGIONS += ["AD", "PE", "ZA", "SE", "NG", "MX", "PL", "TR", "KR", "RU", "EG", "ID", "PH", "CH"]


@st.composite
def _phones(draw: st.DrawFn) -> tuple[str, str]:
    """A phone number as written (internationally or nationally) and the region to read it in."""
    region = draw(st.sampled_from(_REGIONS))
    kind = draw(
        st.sampled_from(
            [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
        )
    )
    number = phonenumbers.example_number_for_type(region, kind)
    style = draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.E164,
                phonenumbers.PhoneNumberFormat.NATIONAL,
            ]
        )
    )
    written = phonenumbers.format_number(number, style)
    # Vary the subscriber digits, which changes neither the length nor the format.
    tail = list(draw(st.from_regex(r"[0-9]{3}", fullmatch=True)))
    chars = list(written)
    for i in reversed(range(len(chars))):
        if chars[i].isdigit() and tail:
            chars[i] = tail.pop()
    written = "".join(chars)
    # National numbers of fewer than 7 digits are left alone on purpose (order numbers).
    assume(written.startswith("+") or sum(c.isdigit() for c in written) >= 7)
    return written, region


_PII = st.one_of(
    _emails().map(lambda t: (t, "US", "email")),
    _cards().map(lambda t: (t, "US", "card")),
    _phones().map(lambda p: (p[0], p[1], "phone")),
)


@settings(max_examples=200, deadline=None)
@given(prefix=_PROSE, pii=_PII, suffix=_PROSE)
def test_planted_pii_never_survives_and_the_prose_is_kept(
    prefix: str, pii: tuple[str, str, str], suffix: str
) -> None:
    planted, region, kind = pii
    assert _one(f"{prefix} {planted} {suffix}", region) == (
        f"{prefix} {PLACEHOLDERS[kind]} {suffix}",
        [kind],
    )


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=_LETTERS + " .,;:!?'\"()[]-_/%&*\n", max_size=80))
def test_text_without_digits_at_signs_or_urls_is_unchanged(text: str) -> None:
    # Spelled-out addresses ("jane at example dot com", "jane [ at ] example") need the word
    # "at", so texts with it are left out, as are those that happen to spell "http" or "www".
    words = text.lower().translate(str.maketrans("()[]", "    ")).split()
    assume("at" not in words and "http" not in text.lower() and "www" not in text.lower())
    assert _one(text) == (text, [])
