"""Every warehouse table: its layer, name, partition key, columns, and what one row is.

A table is declared here once. ``Warehouse.write_partition`` (and ``add_file``) refuse a frame
that does not match its table, and a table that is not declared (``TableContractError``); code
names a table by its constant (``USER_SCORES.layer``, ``USER_SCORES.name``); the docs' table
reference (reference/tables.md, written by docs/gen_reference.py) is generated from it.

Where a table's columns are defined elsewhere, they are derived from there, not written twice:

- ``raw/<source>``, ``clean/<source>``, ``held/source=<source>``: one table per landing source,
  made from its contract (schemas/landing.py), plus the few columns ingest and clean add (``_row``;
  ``source_file``, ``source_row``; feedback's ``text_chars`` and ``pii``; ``waits_for``), in
  ``RAW_ROW``, ``LINEAGE``, ``CLEAN_DERIVED`` and ``WAITS_FOR`` below (tests/warehouse/
  test_tables.py checks them against what the clean code makes of no rows);
- ``quarantine/source=<source>/stage=<ingest|clean>``: one shape for every source and stage
  (``QUARANTINE_SCHEMA``);
- ``features/user``: what ``user_features`` (tasks/behaviour/features.py) computes. The warehouse
  cannot import the tasks (the layers of pyproject's import-linter contracts), so this table is
  declared with a schema function instead of a schema: tasks/behaviour/units.py, the code that
  writes it, hands over ``user_features_schema`` (``declare_columns``), which Polars plans over
  empty clean tables. A feature added to features.py is a column here with no edit.

Column order is part of a contract (a partition's bytes, and so its content hash, depend on
it). A column whose name carries a setting (``p_purchase_30d`` is ``p_purchase_<H>d``, H the
model's horizon) is declared with ``NamedBySetting``: any value of the setting matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import polars as pl

from nightowl.errors import NightowlError
from nightowl.schemas.landing import CONTRACTS, SOURCES

#: The warehouse's layers, in the order data flows through them.
LAYERS = ("raw", "quarantine", "held", "clean", "features", "predictions", "reports")
#: Where the contracts live, for messages.
HERE = "nightowl/warehouse/tables.py"


class TableContractError(NightowlError, ValueError):
    """A frame that does not match its table's contract, or a table that is not declared."""


@dataclass(frozen=True)
class NamedBySetting:
    """A column whose name carries a setting's value: declared under its default name."""

    #: The name with the default settings, as the table's schema has it (``p_purchase_30d``).
    column: str
    #: Every name it may have (a regular expression, matched in full).
    pattern: str
    #: The name as people read it (``p_purchase_<H>d``).
    shown: str
    #: What sets it, for people.
    setting: str


#: A function giving a table's columns, for a table declared without them (``declare_columns``).
SchemaFunction = Callable[[], pl.Schema]
_DECLARED: dict[tuple[str, str], SchemaFunction] = {}


@dataclass(frozen=True)
class Table:
    """One warehouse table: ``<layer>/<name>/<partition_key>=<value>/`` holding ``schema``."""

    layer: str
    name: str
    partition_key: str
    #: The columns, in order; None: declared by the code that computes them (``declared_by``).
    columns: pl.Schema | None = field(hash=False, repr=False)
    #: What one row is, in one line.
    doc: str
    named_by: tuple[NamedBySetting, ...] = ()
    #: Where the columns of a table declared with a schema function come from, for people.
    declared_by: str = ""

    @cached_property
    def schema(self) -> pl.Schema:
        """The table's columns and dtypes, in order."""
        if self.columns is not None:
            return self.columns
        columns = _DECLARED.get((self.layer, self.name))
        if columns is None:
            raise TableContractError(
                f"{self.path}: its columns are declared by the code that computes them "
                f"({self.declared_by}), which has not been imported"
            )
        return columns()

    @property
    def path(self) -> str:
        """``layer/name``, as messages and manifests name the table."""
        return f"{self.layer}/{self.name}"

    def partition(self, value: str) -> dict[str, str]:
        """The partition of this table for ``value`` (``{"as_of": "2026-11-28"}``)."""
        return {self.partition_key: value}

    def expected(self, columns: Iterable[str]) -> pl.Schema:
        """The schema a frame with ``columns`` must have: ``schema``, with each column named by a
        setting under the one name among ``columns`` that fits it (if exactly one does)."""
        if not self.named_by:
            return self.schema
        names = list(columns)
        renamed = {
            n.column: fits[0] for n in self.named_by if len(fits := self._fits(n, names)) == 1
        }
        return pl.Schema({renamed.get(c, c): t for c, t in self.schema.items()})

    def _fits(self, named: NamedBySetting, columns: list[str]) -> list[str]:
        """The names among ``columns`` that ``named`` may have (a fixed column's is not one)."""
        fixed = set(self.schema) - {n.column for n in self.named_by}
        return [c for c in columns if c not in fixed and re.fullmatch(named.pattern, c)]

    def check(self, schema: Mapping[str, pl.DataType], partition: Mapping[str, str]) -> None:
        """Raise ``TableContractError`` unless ``schema`` (a frame's, a Parquet file's) and
        ``partition`` are this table's: the same columns, dtypes and order, the same key. Only
        the schema is looked at, never the data."""
        problems = []
        if list(partition) != [self.partition_key]:
            problems.append(
                f"partition {dict(partition)} has keys {list(partition)}, expected "
                f"[{self.partition_key!r}]"
            )
        expected = self.expected(schema)
        for named in self.named_by:
            if len(fits := self._fits(named, list(schema))) > 1:
                problems.append(f"columns {', '.join(fits)} all fit {named.shown}: one is expected")
        for name, dtype in expected.items():
            if name not in schema:
                problems.append(f"column {name!r} is missing (expected {dtype})")
            elif schema[name] != dtype:
                problems.append(f"column {name!r} is {schema[name]}, expected {dtype}")
        for name, dtype in schema.items():
            if name not in expected:
                problems.append(f"column {name!r} ({dtype}) is not one of the table's columns")
        if not problems and list(schema) != list(expected):
            at = next(i for i, (a, b) in enumerate(zip(schema, expected, strict=True)) if a != b)
            problems.append(
                f"column {at + 1} is {list(schema)[at]!r}, expected {list(expected)[at]!r} "
                f"(columns in order: {', '.join(expected)})"
            )
        if problems:
            raise TableContractError(
                f"{self.path}: the frame does not match the table's contract in {HERE}: "
                + "; ".join(problems)
            )


# ---- raw, quarantine, held, clean: per landing source, from the landing contracts -------------

#: Raw rows: each landing row's number in its file (tasks/ingest/contract.py ROW) first.
RAW_ROW = {"_row": pl.Int64()}
#: What clean adds after the contract's columns, per source (tasks/ingest/clean.py SPECS derived).
CLEAN_DERIVED: dict[str, dict[str, pl.DataType]] = {
    "feedback": {"text_chars": pl.UInt32(), "pii": pl.List(pl.String())},
}
#: Every clean row's landing file and row number (tasks/ingest/clean.py LINEAGE), last.
LINEAGE = {"source_file": pl.String(), "source_row": pl.Int64()}
#: A held row's first run date whose cutoff reaches it (tasks/ingest/clean.py held_rows).
WAITS_FOR = {"waits_for": pl.Date()}
#: Rejected rows, of every source and stage (tasks/ingest/contract.py quarantined_rows,
#: tasks/ingest/clean.py rejected_clean_rows).
QUARANTINE_SCHEMA = pl.Schema(
    {
        "file": pl.String(),
        "row": pl.Int64(),
        "column": pl.String(),
        "raw_value": pl.String(),
        "reason": pl.String(),
        "record": pl.String(),
    }
)
STAGES = ("ingest", "clean")


def _clean_columns(source: str) -> dict[str, pl.DataType]:
    return {**CONTRACTS[source].schema, **CLEAN_DERIVED.get(source, {}), **LINEAGE}


def _dated(source: str) -> bool:
    """Whether a source's rows carry their own date (else it is a snapshot: the catalogue)."""
    return CONTRACTS[source].partition_column is not None


RAW: dict[str, Table] = {
    s: Table(
        "raw",
        s,
        "dt",
        pl.Schema({**RAW_ROW, **CONTRACTS[s].schema}),
        f"a landing row of {s} that met its contract, typed, as received (partitioned by the "
        "night its file arrived)",
    )
    for s in SOURCES
}
CLEAN: dict[str, Table] = {
    s: Table(
        "clean",
        s,
        "dt",
        pl.Schema(_clean_columns(s)),
        f"a cleaned row of {s}, in the partition of its own (UTC) date"
        if _dated(s)
        else f"a row of the {s} catalogue in force on the date (a snapshot a night)",
    )
    for s in SOURCES
}
#: Early rows, waiting for their day (a snapshot source's, items', never are: clean holds none).
HELD: dict[str, Table] = {
    s: Table(
        "held",
        f"source={s}",
        "dt",
        pl.Schema({**_clean_columns(s), **WAITS_FOR}),
        f"a row of {s} dated after the latest run date (within the horizon), held for its day"
        if _dated(s)
        else f"none: {s} is a snapshot, of which clean holds nothing (the table stays empty)",
    )
    for s in SOURCES
}
#: Rejected rows, per source and stage: at ingest (the landing contract), at clean (duplicates,
#: too far in the future, price outliers; nothing of a snapshot source).
QUARANTINE: dict[tuple[str, str], Table] = {
    (s, stage): Table(
        "quarantine",
        f"source={s}/stage={stage}",
        "dt",
        QUARANTINE_SCHEMA,
        f"a row of {s} rejected at {stage}: its file, row, first bad column, raw value, reason "
        "and the whole row as JSON"
        if stage == "ingest" or _dated(s)
        else f"none: {s} is a snapshot, of which clean rejects nothing (the table stays empty)",
    )
    for s in SOURCES
    for stage in STAGES
}

CLEAN_EVENTS = CLEAN["events"]
CLEAN_ITEMS = CLEAN["items"]
CLEAN_FEEDBACK = CLEAN["feedback"]
CLEAN_MARKET_PRICES = CLEAN["market_prices"]
CLEAN_MARKET_INDICATORS = CLEAN["market_indicators"]


# ---- features -------------------------------------------------------------------------------

USER_FEATURES = Table(
    "features",
    "user",
    "as_of",
    None,
    "a user with an event before as_of: the propensity model's inputs, and as_of",
    declared_by="tasks/behaviour/units.py user_features_schema, from tasks/behaviour/features.py",
)


def declare_columns(table: Table, columns: SchemaFunction) -> None:
    """Give ``table`` (declared with ``columns=None``) its schema function: called by the code that
    computes the table, when it is imported. The function runs once, when the schema is first
    asked for."""
    if table.columns is not None:
        raise ValueError(f"{table.path} has its columns declared in {HERE} already")
    _DECLARED[(table.layer, table.name)] = columns
    table.__dict__.pop("schema", None)  # asked for before: ask again


# ---- predictions ----------------------------------------------------------------------------

_STRINGS = pl.List(pl.String())
_UTC = pl.Datetime("us", "UTC")

USER_SCORES = Table(
    "predictions",
    "user_scores",
    "as_of",
    pl.Schema(
        {
            "user_id": pl.String(),
            "p_purchase_30d": pl.Float64(),
            "churn_risk": pl.Float64(),
            "risk_tier": pl.String(),
            "segment": pl.String(),
            "model_version": pl.String(),
            "provider": pl.String(),
            "scoring_graph": pl.String(),
        }
    ),
    "a user with features as of as_of: purchase propensity, churn risk, risk tier, RFM segment",
    named_by=(
        NamedBySetting(
            "p_purchase_30d",
            r"p_purchase_\d+d",
            "p_purchase_<H>d",
            "H: the horizon the scoring model was trained for ([model] horizon_days)",
        ),
    ),
)
PRICE_POSITION = Table(
    "predictions",
    "price_position",
    "as_of",
    pl.Schema(
        {
            "item_id": pl.String(),
            "category": pl.String(),
            "date": pl.Date(),
            "our_price": pl.Float64(),
            "competitor_min": pl.Float64(),
            "competitor_median": pl.Float64(),
            "competitor_max": pl.Float64(),
            "gap_pct": pl.Float64(),
            "competitors": pl.Int32(),
            "our_rank": pl.Int32(),
            "days_since_price_change": pl.Int64(),
            "days_since_gap_sign_change": pl.Int64(),
            "active": pl.Boolean(),
            "promotion": pl.Boolean(),
        }
    ),
    "an item on the day before as_of: our price against the competitors' quotes",
)
DEMAND_FORECAST = Table(
    "predictions",
    "demand_forecast",
    "as_of",
    pl.Schema(
        {
            "item_id": pl.String(),
            "category": pl.String(),
            "target_date": pl.Date(),
            "horizon": pl.Int32(),
            "forecast": pl.Float64(),
            "lower": pl.Float64(),
            "upper": pl.Float64(),
            "history_days": pl.Int32(),
            "promotion": pl.Boolean(),
            "model_version": pl.String(),
        }
    ),
    "an item and a day of the horizon from as_of: expected units and their 80 % interval",
)
CATEGORY_FORECAST = Table(
    "predictions",
    "category_forecast",
    "as_of",
    pl.Schema(
        {
            "category": pl.String(),
            "target_date": pl.Date(),
            "horizon": pl.Int32(),
            "forecast": pl.Float64(),
            "items": pl.Int32(),
            "lower": pl.Float64(),
            "upper": pl.Float64(),
            "model_version": pl.String(),
        }
    ),
    "a category and a day of the horizon: its items' forecasts summed, with an interval",
)
PRICE_SCENARIOS = Table(
    "predictions",
    "price_scenarios",
    "as_of",
    pl.Schema(
        {
            "item_id": pl.String(),
            "category": pl.String(),
            "price_change_pct": pl.Float64(),
            "price": pl.Float64(),
            "gap_pct": pl.Float64(),
            "forecast_units": pl.Float64(),
            "vs_as_is_pct": pl.Float64(),
            "model_version": pl.String(),
        }
    ),
    "a top item (by forecast) and a price change: the units forecast at that price",
)
FEEDBACK_SCORES = Table(
    "predictions",
    "feedback_scores",
    "as_of",
    pl.Schema(
        {
            "feedback_id": pl.String(),
            "created_at": _UTC,
            "user_id": pl.String(),
            "item_id": pl.String(),
            "channel": pl.String(),
            "rating": pl.Int64(),
            "sentiment_score": pl.Float64(),
            "sentiment_label": pl.String(),
            "sentiment_source": pl.String(),
            "aspects": _STRINGS,
            "title": pl.String(),
            "text": pl.String(),
            "pii": _STRINGS,
            "text_chars": pl.UInt32(),
            "model_version": pl.String(),
        }
    ),
    "a feedback item of the history window before as_of: its sentiment and aspects",
)
PRODUCT_SENTIMENT = Table(
    "predictions",
    "product_sentiment",
    "as_of",
    pl.Schema(
        {
            "level": pl.String(),
            "item_id": pl.String(),
            "category": pl.String(),
            "day": pl.Date(),
            "feedback": pl.UInt32(),
            "mean_rating": pl.Float64(),
            "mean_sentiment": pl.Float64(),
            "negative_share": pl.Float64(),
            "top_complaints": _STRINGS,
            "model_version": pl.String(),
        }
    ),
    "an item or a category and a day of the window before as_of: feedback, sentiment, complaints",
)
SUPPORT_QUEUE = Table(
    "predictions",
    "support_queue",
    "as_of",
    pl.Schema(
        {
            "rank": pl.UInt32(),
            "feedback_id": pl.String(),
            "created_at": _UTC,
            "user_id": pl.String(),
            "item_id": pl.String(),
            "topic": pl.String(),
            "aspects": _STRINGS,
            "title": pl.String(),
            "text": pl.String(),
            "sentiment_score": pl.Float64(),
            "sentiment_label": pl.String(),
            "model_version": pl.String(),
            "urgency": pl.Float64(),
            "urgency_reasons": _STRINGS,
            "repeat_contacts": pl.Int64(),
            "faq_id": pl.String(),
            "faq_question": pl.String(),
            "suggested_answer": pl.String(),
            "answer_similarity": pl.Float64(),
        }
    ),
    "a support ticket of the queue window before as_of, most urgent first, with an FAQ answer",
)
RECOMMENDATIONS = Table(
    "predictions",
    "recommendations",
    "as_of",
    pl.Schema(
        {
            "user_id": pl.String(),
            "rank": pl.Int32(),
            "item_id": pl.String(),
            "title": pl.String(),
            "category": pl.String(),
            "score": pl.Float64(),
            "source": pl.String(),
            "reason": pl.String(),
            "model_version": pl.String(),
        }
    ),
    "an active user and a rank: a recommended item, its score and the reason in words",
)


# ---- reports --------------------------------------------------------------------------------

#: kpi_daily's measures, each followed by its day-on-day and week-on-week change.
_KPIS: dict[str, pl.DataType] = {
    "active_users": pl.Int64(),
    "buyers": pl.Int64(),
    "orders": pl.Int64(),
    "revenue": pl.Float64(),
    "average_order_value": pl.Float64(),
    "returns": pl.Int64(),
    "return_value": pl.Float64(),
    "new_buyers": pl.Int64(),
    "returning_buyers": pl.Int64(),
    "feedback": pl.Int64(),
    "conversion": pl.Float64(),
    "mean_rating": pl.Float64(),
    "negative_feedback_share": pl.Float64(),
}

KPI_DAILY = Table(
    "reports",
    "kpi_daily",
    "as_of",
    pl.Schema(
        {
            "day": pl.Date(),
            **{
                name: dtype
                for kpi, kind in _KPIS.items()
                for name, dtype in (
                    (kpi, kind),
                    (f"{kpi}_dod", pl.Float64()),
                    (f"{kpi}_wow", pl.Float64()),
                )
            },
        }
    ),
    "a day of the KPI window before as_of: each KPI, with its day-on-day and week-on-week change",
)
SEGMENTS = Table(
    "reports",
    "segments",
    "as_of",
    pl.Schema(
        {
            "segment": pl.String(),
            "users": pl.UInt32(),
            "user_share": pl.Float64(),
            "customers": pl.UInt32(),
            "revenue": pl.Float64(),
            "revenue_share": pl.Float64(),
            "revenue_per_user": pl.Float64(),
            "mean_churn_risk": pl.Float64(),
            "mean_propensity": pl.Float64(),
            "expected_buyers": pl.Float64(),
            "high_risk_users": pl.UInt32(),
            "goal": pl.String(),
            "model_version": pl.String(),
        }
    ),
    "an RFM segment of user_scores: its users, revenue, churn risk and campaign goal",
)
AT_RISK_CUSTOMERS = Table(
    "reports",
    "at_risk_customers",
    "as_of",
    pl.Schema(
        {
            "rank": pl.Int32(),
            "user_id": pl.String(),
            "segment": pl.String(),
            "risk_tier": pl.String(),
            "churn_risk": pl.Float64(),
            "p_purchase": pl.Float64(),
            "value": pl.Float64(),
            "value_at_risk": pl.Float64(),
            "orders": pl.UInt32(),
            "last_purchase": pl.Date(),
            "days_since_purchase": pl.Int64(),
            "favourite_category": pl.String(),
            "top_recommendation": pl.String(),
            "top_recommendation_title": pl.String(),
            "top_recommendation_reason": pl.String(),
            "model_version": pl.String(),
        }
    ),
    "one of the customers with the most value at risk (value x churn risk), most first",
)
PRODUCT_HEALTH = Table(
    "reports",
    "product_health",
    "as_of",
    pl.Schema(
        {
            "item_id": pl.String(),
            "title": pl.String(),
            "category": pl.String(),
            "price": pl.Float64(),
            "active": pl.Boolean(),
            "units_7d": pl.Float64(),
            "revenue_7d": pl.Float64(),
            "units_28d": pl.Float64(),
            "revenue_28d": pl.Float64(),
            "units_7d_change": pl.Float64(),
            "forecast_units": pl.Float64(),
            "forecast_days": pl.Int32(),
            "forecast_change": pl.Float64(),
            "competitor_median": pl.Float64(),
            "gap_pct": pl.Float64(),
            "our_rank": pl.Int32(),
            "feedback": pl.Int64(),
            "mean_rating": pl.Float64(),
            "mean_sentiment": pl.Float64(),
            "negative_share": pl.Float64(),
            "top_complaint": pl.String(),
            "flags": _STRINGS,
            "health": pl.String(),
        }
    ),
    "a catalogue item: sales, forecast, price gap, feedback, and flags saying what needs a look",
    named_by=(
        NamedBySetting(
            "units_28d", r"units_\d+d", "units_<D>d", "D: [report] product_days (default 28)"
        ),
        NamedBySetting(
            "revenue_28d", r"revenue_\d+d", "revenue_<D>d", "D: [report] product_days (default 28)"
        ),
    ),
)
CAMPAIGN_BRIEFS = Table(
    "reports",
    "campaign_briefs",
    "as_of",
    pl.Schema(
        {
            "segment": pl.String(),
            "audience": pl.Int64(),
            "goal": pl.String(),
            "top_item_ids": _STRINGS,
            "top_items": _STRINGS,
            "top_categories": _STRINGS,
            "customer_words": _STRINGS,
            "headline": pl.String(),
            "message": pl.String(),
            "send_weekday": pl.String(),
            "send_hour": pl.Int32(),
            "send_time": pl.String(),
            "writer": pl.String(),
            "model_version": pl.String(),
        }
    ),
    "a segment with users: a campaign brief (audience, items, words, copy, when to send)",
)

MODEL_EVALUATION = Table(
    "reports",
    "model_evaluation",
    "as_of",
    pl.Schema(
        {
            "model": pl.String(),
            "origin": pl.Date(),
            "horizon_days": pl.Int32(),
            "scorer": pl.String(),
            "kind": pl.String(),
            "protocol": pl.String(),
            "metric": pl.String(),
            "value": pl.Float64(),
            "higher_is_better": pl.Boolean(),
            "units": pl.Int64(),
            "primary": pl.Boolean(),
        }
    ),
    "one figure of a rolling-origin backtest (nightowl evaluate): a model, one of its simple "
    "rules or a learned reference (kind), judged by one metric on the outcomes after one origin "
    "under one protocol; primary marks the metric that decides whether the model beats its rules",
)


#: Where a served night's predictions stand once their outcomes are in, and what fed them.
_JUDGED = {
    "model": pl.String(),
    "model_version": pl.String(),
    "outcome_start": pl.Date(),
    "outcome_end": pl.Date(),
    "scorer": pl.String(),
    "kind": pl.String(),
    "protocol": pl.String(),
    "metric": pl.String(),
    "bin": pl.Int32(),
    "value": pl.Float64(),
    "higher_is_better": pl.Boolean(),
    "units": pl.Int64(),
    "primary": pl.Boolean(),
}
MODEL_HEALTH = Table(
    "reports",
    "model_health",
    "as_of",
    pl.Schema(_JUDGED),
    "one figure of the predictions served as of as_of, judged once their outcome window "
    "(outcome_start to outcome_end) had passed: what was served (scorer served, model_version "
    "naming the model or the simple rule that served) or a simple rule on the same units (kind "
    "rule), by one metric; bin numbers the reliability curve's bins (null for other metrics)",
)
MODEL_DRIFT = Table(
    "reports",
    "model_drift",
    "as_of",
    pl.Schema(
        {
            "model": pl.String(),
            "model_version": pl.String(),
            "reference_as_of": pl.Date(),
            "kind": pl.String(),
            "column": pl.String(),
            "psi": pl.Float64(),
            "missing_share": pl.Float64(),
            "reference_missing_share": pl.Float64(),
            "mean": pl.Float64(),
            "reference_mean": pl.Float64(),
            "drifted": pl.Boolean(),
        }
    ),
    "an input (kind input) or a served score (kind score) of a model's predictions as of as_of "
    "against the same column as of the training date of the version that served them "
    "(reference_as_of): population stability index, missing shares, means, and whether it "
    "drifted past the thresholds",
)


# ---- the lookup -----------------------------------------------------------------------------

PREDICTION_TABLES = (
    USER_SCORES,
    PRICE_POSITION,
    DEMAND_FORECAST,
    CATEGORY_FORECAST,
    PRICE_SCENARIOS,
    FEEDBACK_SCORES,
    PRODUCT_SENTIMENT,
    SUPPORT_QUEUE,
    RECOMMENDATIONS,
)
REPORT_TABLES = (KPI_DAILY, SEGMENTS, AT_RISK_CUSTOMERS, PRODUCT_HEALTH, CAMPAIGN_BRIEFS)
#: Report-layer tables written by their own command rather than the nightly report step.
EVALUATION_TABLES = (MODEL_EVALUATION,)
#: Report-layer tables the nightly model-health step writes.
HEALTH_TABLES = (MODEL_HEALTH, MODEL_DRIFT)

#: Every table, by (layer, name), layer by layer in ``LAYERS`` order.
TABLES: dict[tuple[str, str], Table] = {
    (t.layer, t.name): t
    for t in sorted(
        [
            *RAW.values(),
            *QUARANTINE.values(),
            *HELD.values(),
            *CLEAN.values(),
            USER_FEATURES,
            *PREDICTION_TABLES,
            *REPORT_TABLES,
            *EVALUATION_TABLES,
            *HEALTH_TABLES,
        ],
        key=lambda t: LAYERS.index(t.layer),
    )
}


def table(layer: str, name: str) -> Table:
    """The table ``layer/name``; ``TableContractError`` when no such table is declared."""
    found = TABLES.get((layer, name))
    if found is None:
        known = ", ".join(t.name for t in TABLES.values() if t.layer == layer) or "none"
        raise TableContractError(
            f"{layer}/{name} is not a warehouse table: declare it in {HERE} before writing it "
            f"(tables of layer {layer!r}: {known})"
        )
    return found
