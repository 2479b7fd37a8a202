"""Landing contracts: the columns each source may carry, their types and the rules a row must meet.

Ingest validates every landing row against them; a row that
breaks one goes to quarantine with the rule's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

Kind = Literal["string", "int", "float", "bool", "timestamp", "date"]

#: Physical type each contract kind is stored as in the raw and clean layers.
POLARS_TYPES: dict[Kind, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "timestamp": pl.Datetime("us", "UTC"),
    "date": pl.Date(),
}

#: What a person is told was expected when a value does not parse.
EXPECTED: dict[Kind, str] = {
    "string": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true/false",
    "timestamp": "a timestamp",
    "date": "a date (YYYY-MM-DD)",
}


@dataclass(frozen=True)
class Column:
    """One contract column: its type, whether a row needs it, and its allowed range."""

    name: str
    kind: Kind
    required: bool = False
    min: float | None = None
    max: float | None = None

    @property
    def dtype(self) -> pl.DataType:
        return POLARS_TYPES[self.kind]


@dataclass(frozen=True)
class SourceContract:
    """A landing source: its columns, and groups of columns of which at least one must be set."""

    name: str
    columns: tuple[Column, ...]
    #: Each group needs at least one non-empty value per row (e.g. feedback needs text or rating).
    any_of: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    #: The column whose UTC date names the clean partition a row belongs to (None: snapshot table).
    partition_column: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})


EVENTS = SourceContract(
    "events",
    (
        Column("event_id", "string"),
        Column("user_id", "string", required=True),
        Column("session_id", "string"),
        Column("event_time", "timestamp", required=True),
        Column("event_type", "string", required=True),
        Column("item_id", "string"),
        Column("order_id", "string"),
        Column("quantity", "int", min=1),
        Column("price", "float", min=0),
        Column("channel", "string"),
        Column("device", "string"),
    ),
    partition_column="event_time",
)

ITEMS = SourceContract(
    "items",
    (
        Column("item_id", "string", required=True),
        Column("title", "string"),
        Column("category", "string"),
        Column("brand", "string"),
        Column("price", "float", min=0),
        Column("created_at", "timestamp"),
        Column("active", "bool"),
        Column("promotion", "bool"),
    ),
)

FEEDBACK = SourceContract(
    "feedback",
    (
        Column("feedback_id", "string"),
        Column("user_id", "string"),
        Column("item_id", "string"),
        Column("rating", "int", min=1, max=5),
        Column("title", "string"),
        Column("text", "string"),
        Column("channel", "string"),
        Column("created_at", "timestamp", required=True),
    ),
    any_of=(("text", "rating"),),
    partition_column="created_at",
)

MARKET_PRICES = SourceContract(
    "market_prices",
    (
        Column("date", "date", required=True),
        Column("item_id", "string", required=True),
        Column("competitor", "string", required=True),
        Column("price", "float", required=True, min=0),
        Column("currency", "string"),
        Column("in_stock", "bool"),
    ),
    partition_column="date",
)

MARKET_INDICATORS = SourceContract(
    "market_indicators",
    (
        Column("date", "date", required=True),
        Column("indicator", "string", required=True),
        Column("value", "float", required=True),
        Column("dimension", "string"),
    ),
    partition_column="date",
)

CONTRACTS: dict[str, SourceContract] = {
    c.name: c for c in (EVENTS, ITEMS, FEEDBACK, MARKET_PRICES, MARKET_INDICATORS)
}
SOURCES: tuple[str, ...] = tuple(CONTRACTS)

#: Event types the models know; any other string is kept and counted.
KNOWN_EVENT_TYPES: tuple[str, ...] = (
    "view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "return",
)
