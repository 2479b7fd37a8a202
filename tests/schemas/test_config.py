"""The config models' own checks: a bad encoding, regex, timestamp format or check name is refused
when the config is read, with the setting's value in the message, never half-way through a run."""

from __future__ import annotations

import codecs
import encodings.aliases

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from nightowl.schemas.config import CHECK_NAMES, CheckSettings
from nightowl.schemas.landing import SOURCES
from nightowl.schemas.sources import SourceConfig


def _refused(**cfg) -> str:
    """The one validation error of a SourceConfig with these settings: "setting: message"."""
    with pytest.raises(ValidationError) as info:
        SourceConfig(**cfg)
    [error] = info.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


# ---- encoding ---------------------------------------------------------------------------------
def test_an_unknown_encoding_is_refused_naming_it_and_what_is_expected():
    message = _refused(encoding="latin-9x")
    assert "encoding" in message and "unknown encoding 'latin-9x'" in message
    assert "'utf-8', 'latin-1', 'cp1252'" in message


def test_a_codec_that_is_not_a_text_encoding_is_refused():
    assert "'base64' is not a text encoding" in _refused(encoding="base64")


def _text_codecs() -> list[str]:
    names = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
    found = []
    for name in sorted(names):
        try:
            if codecs.lookup(name)._is_text_encoding:
                found.append(name)
        except LookupError:  # an alias of a codec this platform lacks (mbcs…)
            continue
    return found


@given(st.sampled_from(_text_codecs()))
def test_any_python_text_codec_name_loads(name):
    assert SourceConfig(encoding=name).encoding == name


# ---- non_product_pattern ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("^(POST", "unclosed group"),
        ("[a-", "unclosed character class"),
        ("(?<=C)\\d+", "look-around"),  # Python's re takes it; Polars' Rust regex does not
    ],
)
def test_a_regex_polars_cannot_compile_is_refused_with_its_error(pattern, error):
    message = _refused(non_product_pattern=pattern)
    assert "non_product_pattern" in message and repr(pattern) in message and error in message
    assert "\n" not in message  # Polars' error spans lines; the message does not


def test_the_online_retail_pattern_compiles():
    pattern = r"^(POST|DOT|C2|C3|M|m|D|S|B|CRUK|ADJUST2?|BANK CHARGES|TEST00\d|gift_0001_\d+)$"
    assert SourceConfig(non_product_pattern=pattern).non_product_pattern == pattern


# ---- timestamp_format -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt",
    [
        "%d/%m/%Y %H:%M",  # Online Retail, UK spelling
        "%m/%d/%Y %H:%M",  # Online Retail, US spelling
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%:z",
        "%Y-%m-%dT%H:%M:%S%#z",  # parse-only offset directive
        "%Y-%m-%d %H:%M:%S %Z",
        "%Y-%m-%d",  # date-only: market prices, indicators
        "%d.%m.%Y %H:%M:%S",
        "%Y%m%d%H%M%S",
        "%b %d %Y %I:%M %p",
        "%Y-%m-%dT%H:%M:%SZ",  # a literal Z
        "%Y-%m-%d %H:%M:%S%.3f",
        "%s",  # Unix seconds
        "%Y-%m",  # monthly indicators
    ],
)
def test_real_world_timestamp_formats_load(fmt):
    assert SourceConfig(timestamp_format=fmt).timestamp_format == fmt


@pytest.mark.parametrize(
    ("fmt", "why"),
    [
        ("%Q", "directives Polars does not know (%Q)"),
        ("%Y-%m-%d %i:%M", "directives Polars does not know (%i)"),
        ("%Y-%m-%d %", "directives Polars does not know (%)"),
        ("%H:%M", "reads back as 0001-01-01 14:03:00"),  # no date
        ("%d/%m %H:%M", "loses part of a timestamp"),  # no year
        ("%Y-%m-%d %H:%M:%S%:::z", "cannot read back what it writes"),
    ],
)
def test_a_timestamp_format_that_cannot_round_trip_is_refused_with_an_example(fmt, why):
    message = _refused(timestamp_format=fmt)
    assert "timestamp_format" in message and repr(fmt) in message and why in message
    assert "expected e.g. '%Y-%m-%d %H:%M:%S' for 2026-03-17 14:03:05" in message


_DATE_ORDERS = st.permutations(["%Y", "%m", "%d"]).filter(lambda p: p[1] != "%Y")
_TIMES = st.sampled_from(["", " %H:%M", " %H:%M:%S", "T%H:%M:%S", "T%H:%M:%S%.f%z", " %I:%M %p"])


@given(_DATE_ORDERS, st.sampled_from("-/. "), _TIMES)
def test_any_ordering_of_year_month_and_day_with_a_time_loads(order, sep, time):
    fmt = sep.join(order) + time
    assert SourceConfig(timestamp_format=fmt).timestamp_format == fmt


# ---- checks -----------------------------------------------------------------------------------
def test_the_check_names_are_the_ones_the_checks_report():
    from nightowl.tasks.ingest import checks

    results = [
        checks.freshness("events", "2026-03-17", [None], True),
        checks.quarantine_share("events", 10, 0, 0.05, True),
        checks.row_count("events", 10, [10, 10, 10], 0.5, True),
        checks.null_share("events", "user_id", 0, 10, 0.25, True),
    ]
    assert [r.check.split(":")[0] for r in results] == list(CHECK_NAMES)


def test_warn_only_names_only_known_checks():
    assert CheckSettings(warn_only=list(CHECK_NAMES)).warn_only == list(CHECK_NAMES)
    with pytest.raises(ValidationError) as info:
        CheckSettings(warn_only=["null_share", "nonexistent"])
    message = str(info.value)
    assert "warn_only" in message and "unknown check(s) ['nonexistent']" in message
    assert "'freshness', 'quarantine_share', 'row_count', 'null_share'" in message


def test_fresh_sources_names_only_known_sources():
    assert CheckSettings(fresh_sources=list(SOURCES)).fresh_sources == list(SOURCES)
    with pytest.raises(ValidationError) as info:
        CheckSettings(fresh_sources=["events", "clicks"])
    assert "fresh_sources" in str(info.value) and "unknown source(s) ['clicks']" in str(info.value)


# ---- missing_user -----------------------------------------------------------------------------
def test_guests_are_kept_by_default_and_quarantine_is_an_option():
    assert SourceConfig().missing_user == "guest"
    assert SourceConfig(missing_user="quarantine").missing_user == "quarantine"
    assert "missing_user" in _refused(missing_user="drop")
