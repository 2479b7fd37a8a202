"""The column-mapping model: how one landing source's files map onto its contract
(``nightowl.schemas.landing``): format, delimiter, encoding, column names, time zone and
timestamp format, event-type synonyms. One ``[sources.<source>]`` table of nightowl.toml each.
"""

from __future__ import annotations

import codecs
import io
import re
import warnings
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

Format = Literal["auto", "csv", "jsonl", "parquet"]

#: Event type synonyms every source gets; `event_type_map` adds to or overrides them.
DEFAULT_EVENT_TYPE_MAP: dict[str, str] = {
    "pageview": "view",
    "page_view": "view",
    "product_view": "view",
    "addtocart": "add_to_cart",
    "add to cart": "add_to_cart",
    "cart": "add_to_cart",
    "removefromcart": "remove_from_cart",
    "remove from cart": "remove_from_cart",
    "order": "purchase",
    "buy": "purchase",
    "transaction": "purchase",
    "refund": "return",
    "cancellation": "return",
}


def known_zone(value: str) -> str:
    """``value`` if it is an IANA time zone name; a ValueError naming it otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (expected e.g. 'Europe/London')") from exc
    return value


def known_encoding(value: str) -> str:
    """``value`` if Python can read text in that encoding; a ValueError naming it otherwise."""
    expected = "expected a Python codec name such as 'utf-8', 'latin-1', 'cp1252'"
    try:
        codecs.lookup(value)
    except LookupError as exc:
        raise ValueError(f"unknown encoding {value!r} ({expected})") from exc
    try:
        io.TextIOWrapper(io.BytesIO(), encoding=value)  # how the landing reader opens the file
    except LookupError as exc:  # base64, zlib, rot13…: codecs, but not of text
        raise ValueError(f"{value!r} is not a text encoding ({expected})") from exc
    return value


def polars_regex(value: str) -> str:
    """``value`` if Polars (Rust's regex crate) compiles it; a ValueError with its error if not."""
    try:
        pl.Series([""], dtype=pl.String).str.contains(value)
    except pl.exceptions.PolarsError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = next((x.removeprefix("error: ") for x in lines if x.startswith("error:")), lines[0])
        raise ValueError(f"{value!r} is not a regular expression Polars can use: {why}") from exc
    return value


#: The time a timestamp format must write and read back at load, and the formats suggested.
_SAMPLE_TIME = datetime(2026, 3, 17, 14, 3, 5, tzinfo=UTC)
_FORMAT_EXAMPLES = (
    "expected e.g. '%Y-%m-%d %H:%M:%S' for 2026-03-17 14:03:05 or '%d/%m/%Y %H:%M' for "
    "17/03/2026 14:03"
)
_DIRECTIVE = re.compile(r"%[-_0^#]?[.:]*\d*.?")


def readable_timestamp_format(value: str) -> str:
    """``value`` if Polars writes a sample time with it and reads the same time back (as ingest
    reads timestamps); a ValueError showing the format and an example otherwise."""
    # %#z only parses (an offset with or without minutes); %:z writes what it reads.
    writing = value.replace("%#z", "%:z")
    sample = pl.Series([_SAMPLE_TIME])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Polars' hints about %f: the round trip decides
        try:
            written = sample.dt.strftime(writing)
        except pl.exceptions.PolarsError as exc:
            unknown = [
                directive.group()
                for piece in re.findall(r"%%|%[^%]*", writing)
                # every piece starts with a %, so it matches
                if not _writes(sample, piece) and (directive := _DIRECTIVE.match(piece))
            ]
            raise ValueError(
                f"{value!r} has directives Polars does not know ({', '.join(unknown) or '?'}); "
                f"{_FORMAT_EXAMPLES}"
            ) from exc
        zone = "UTC" if "%z" in value or "%Z" in value else None
        try:
            read = written.str.to_datetime(value, strict=False, time_unit="us", time_zone=zone)
        except pl.exceptions.PolarsError:
            read = pl.Series([None], dtype=pl.Datetime("us", "UTC"))
        if isinstance(read.dtype, pl.Datetime) and read.dtype.time_zone is None:  # always Datetime
            read = read.dt.replace_time_zone("UTC")
        back = read[0]
        if back is None:
            raise ValueError(
                f"{value!r} cannot read back what it writes: 2026-03-17 14:03:05 UTC written as "
                f"{written[0]!r} does not parse; {_FORMAT_EXAMPLES}"
            )
        if back.year != _SAMPLE_TIME.year or read.dt.strftime(writing)[0] != written[0]:
            raise ValueError(
                f"{value!r} loses part of a timestamp: 2026-03-17 14:03:05 UTC written as "
                f"{written[0]!r} reads back as {back.replace(tzinfo=None).isoformat(' ')}; "
                f"{_FORMAT_EXAMPLES}"
            )
    return value


def _writes(sample: pl.Series, piece: str) -> bool:
    try:
        sample.dt.strftime(piece)
    except pl.exceptions.PolarsError:
        return False
    return True


class SourceConfig(BaseModel):
    """Where a source's files are, how they are read, and how their columns map to the contract."""

    model_config = ConfigDict(extra="forbid")

    landing: str | None = Field(
        default=None,
        description="Folder (or file glob) of the drops; default <data_root>/landing/<source>.",
    )
    glob: str = Field(default="*", description="File-name pattern inside the landing folder.")
    format: Format = Field(default="auto", description="auto: from the extension (.csv, .jsonl…).")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Landing column name → contract column name."
    )
    constants: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Contract columns filled with a constant when missing."
    )
    timestamp_format: str | None = Field(
        default=None, description="strftime format of timestamps; default: ISO 8601 variants."
    )
    timezone: str = Field(default="UTC", description="Zone of timestamps that carry no offset.")
    delimiter: str = ","
    encoding: str = Field(default="utf-8", description="Text encoding of CSV / JSON Lines files.")
    null_values: list[str] = Field(
        default_factory=lambda: ["", "NULL", "null"],
        description="Text read as a missing value in CSV and JSON Lines files.",
    )
    # Events only — how business exports map onto behaviour events.
    # A guest checkout is a real purchase: it counts in revenue and orders, just not per user.
    missing_user: Literal["guest", "quarantine"] = Field(
        default="guest",
        description="Events without user_id: keep them as guest events (user_id null), or"
        " quarantine them.",
    )
    negative_quantity_as: str | None = Field(
        default=None,
        description="Event type of rows with a negative quantity (e.g. 'return' for cancellations);"
        " the quantity is then stored as its absolute value.",
    )
    return_order_prefix: str | None = Field(
        default=None,
        description="Rows whose order_id starts with this (e.g. 'C' for cancellation invoices) are"
        " returns: event type 'return', quantity stored as its absolute value.",
    )
    non_product_items: list[str] = Field(
        default_factory=list, description="Item ids that are not products (postage, fees…)."
    )
    non_product_pattern: str | None = Field(
        default=None, description="Regex matching item ids that are not products."
    )
    # For events these rows get `non_product_event_type`; for items they are quarantined.
    non_product_event_type: str = Field(
        default="non_product", description="Event type given to rows on non-product items."
    )
    plans_ahead_days: int = Field(
        default=0,
        ge=0,
        description="Files whose name is dated up to this many days after the run date are plans"
        " (items: our planned prices and promotions): ingested when they arrive, in force from"
        " their date. 0: a dated file waits for its day's run.",
    )
    settle_seconds: float = Field(
        default=0,
        ge=0,
        description="A file changed less than this many seconds ago is left for the next run"
        " (it may still be being copied).",
    )
    event_type_map: dict[str, str] = Field(
        default_factory=dict, description="Extra event type synonyms (lower-case) → event type."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return known_encoding(value)

    @field_validator("non_product_pattern")
    @classmethod
    def _polars_regex(cls, value: str | None) -> str | None:
        return value if value is None else polars_regex(value)

    @field_validator("timestamp_format")
    @classmethod
    def _readable_format(cls, value: str | None) -> str | None:
        return value if value is None else readable_timestamp_format(value)

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("delimiter must be one character")
        return value

    @property
    def event_types(self) -> dict[str, str]:
        return DEFAULT_EVENT_TYPE_MAP | {k.lower(): v for k, v in self.event_type_map.items()}
