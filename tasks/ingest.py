"""Ingest: map a landing file's columns onto its contract, type every value, split good from bad.

The caller opens the file and streams it through in batches (:func:`mapped_rows` is lazy;
:func:`validated_rows` and the splits work on one batch), so a file of any size needs bounded
memory, and decides where the accepted and quarantined rows are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from schemas.config import SourceConfig
from schemas.landing import EXPECTED, Column, SourceContract

ROW = "_row"
BAD = "_bad"

#: Longer text than this is not data but an accident or an attack (a whole file in one field).
MAX_VALUE_BYTES = 100_000
_DUPLICATE = "_duplicated_"  # how Polars' CSV reader renames a repeated header

_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


class MappingError(Exception):
    """The file's columns cannot be mapped onto the contract (a file-level problem)."""


@dataclass(frozen=True)
class ColumnPlan:
    """How a file's columns become contract columns: renames, constants, and what is dropped."""

    renames: dict[str, str]
    constants: dict[str, object]
    unknown: list[str] = field(default_factory=list)


def column_plan(file_columns: list[str], contract: SourceContract, cfg: SourceConfig) -> ColumnPlan:
    """Which file column feeds each contract column; raises MappingError naming what is missing."""
    repeated = sorted({c.split(_DUPLICATE)[0] for c in file_columns if _DUPLICATE in c})
    if repeated:
        raise MappingError(
            f"the header names {_quoted(repeated)} more than once; expected each column once, "
            "since which of them holds the value cannot be told"
        )
    missing_mapped = [src for src in cfg.columns if src not in file_columns]
    if missing_mapped:
        raise MappingError(
            f"the column mapping names {_quoted(missing_mapped)}, which the file does not have "
            f"(columns found: {_quoted(file_columns)})"
        )
    bad_targets = [dst for dst in cfg.columns.values() if dst not in contract.names]
    bad_targets += [dst for dst in cfg.constants if dst not in contract.names]
    if bad_targets:
        raise MappingError(
            f"the mapping targets {_quoted(bad_targets)}, which are not {contract.name} columns "
            f"(expected some of: {_quoted(contract.names)})"
        )
    renames: dict[str, str] = {}
    for src in file_columns:
        dst = cfg.columns.get(src, src if src in contract.names else None)
        if dst is not None and dst not in renames.values():
            renames[src] = dst
    constants = {k: v for k, v in cfg.constants.items() if k not in renames.values()}
    present = set(renames.values()) | set(constants)
    if contract.name == "events" and cfg.missing_user == "guest":
        present.add("user_id")
    missing = [c for c in contract.required if c not in present]
    if missing:
        raise MappingError(
            f"required column {_quoted(missing)} is missing; expected the {contract.name} columns "
            f"{_quoted(contract.required)} (columns found: {_quoted(file_columns)}); map them "
            f"under [sources.{contract.name}.columns] in nightowl.toml"
        )
    unknown = [c for c in file_columns if c not in renames]
    return ColumnPlan(renames=renames, constants=constants, unknown=unknown)


def mapped_rows(lf: pl.LazyFrame, plan: ColumnPlan, contract: SourceContract) -> pl.LazyFrame:
    """The file's rows with contract column names, a 1-based row number and constants filled in."""
    out = lf.with_row_index(ROW, offset=1).select(
        pl.col(ROW).cast(pl.Int64),
        *(pl.col(src).alias(dst) for src, dst in plan.renames.items()),
        *(pl.lit(value).alias(name) for name, value in plan.constants.items()),
    )
    absent = [
        c for c in contract.names if c not in plan.renames.values() and c not in plan.constants
    ]
    return out.with_columns(pl.lit(None, pl.String).alias(c) for c in absent)


def validated_rows(
    frame: pl.DataFrame,
    contract: SourceContract,
    cfg: SourceConfig,
    *,
    lossy_text: bool = True,
    nul_possible: bool = True,
) -> pl.DataFrame:
    """Rows typed to the contract, beside their raw values, with ``_bad`` set where a rule fails.

    ``frame`` is one batch of :func:`mapped_rows`. Deciding good or bad is one cheap boolean per
    row; the reasons are only worked out for the few bad rows, by :func:`quarantined_rows`.
    ``lossy_text`` says the text was decoded lossily (CSV, JSON Lines): look for U+FFFD;
    ``nul_possible`` False says no value holds a NUL character (the file's bytes were scanned).
    """
    raw_schema = frame.schema
    typed = frame.select(
        pl.col(ROW),
        *(pl.col(c.name).alias(_raw(c.name)) for c in contract.columns),
        *(
            typed_value(pl.col(c.name), raw_schema[c.name], c, cfg, fast=True).alias(c.name)
            for c in contract.columns
        ),
    )
    typed = _with_slow_parses(typed, contract, cfg, raw_schema)
    if contract.name == "events":
        typed = typed.with_columns(events_rules(cfg))
    rules = _checks(contract, cfg, raw_schema, lossy_text, nul_possible)
    bad = [cond.fill_null(False) for _, cond, _ in rules]
    return typed.with_columns(pl.any_horizontal(bad).alias(BAD) if bad else pl.lit(False))


def _checks(
    contract: SourceContract,
    cfg: SourceConfig,
    raw_schema: pl.Schema,
    lossy_text: bool,
    nul_possible: bool,
) -> list[tuple[str, pl.Expr, str]]:
    """(column, condition that is true when the rule fails, what a person is told) per rule."""
    checks: list[tuple[str, pl.Expr, str]] = []
    for col in contract.columns:
        raw, value = pl.col(_raw(col.name)), pl.col(col.name)
        if raw_schema[col.name] == pl.String:
            if lossy_text:
                bad_bytes = raw.str.contains("\ufffd", literal=True)
                checks.append((col.name, bad_bytes, _bad_bytes(col)))
            if nul_possible:
                nul = raw.str.contains("\x00", literal=True)
                checks.append((col.name, nul, f"{col.name}: contains a NUL character"))
            too_long = raw.str.len_bytes() > MAX_VALUE_BYTES  # O(1) a value: offsets only
            checks.append(
                (col.name, too_long, f"{col.name}: longer than {MAX_VALUE_BYTES:,} bytes")
            )
        checks.append((col.name, raw.is_not_null() & value.is_null(), _unparseable(col, cfg)))
        if col.required and not _guest_user(col, contract, cfg):
            checks.append((col.name, raw.is_null(), f"{col.name}: required value is missing"))
        if col.min is not None and col.max is not None:
            bound = f"{col.name}: must be between {col.min:g} and {col.max:g}"
            checks.append((col.name, value.is_between(col.min, col.max).not_(), bound))
        elif col.min is not None:
            checks.append((col.name, value < col.min, f"{col.name}: must be ≥ {col.min:g}"))
    if contract.name == "items" and (cfg.non_product_items or cfg.non_product_pattern):
        checks.append(("item_id", non_product_item(cfg), "item_id: not a product (configured)"))
    for group in contract.any_of:
        none_set = pl.all_horizontal(pl.col(_raw(c)).is_null() for c in group)
        checks.append((group[0], none_set, f"needs at least one of {' or '.join(group)}"))
    return checks


def _with_slow_parses(
    typed: pl.DataFrame, contract: SourceContract, cfg: SourceConfig, raw_schema: pl.Schema
) -> pl.DataFrame:
    """Values from text that the fast parse missed, parsed again in every accepted spelling.

    The fast parse reads numbers as written and timestamps in the canonical ISO spelling; the
    full one also trims spaces, reads ``3.0`` as a whole number and tries every ISO spelling.
    Only the missed rows take the full parse: on every row it costs several times the fast one.
    """
    for col in contract.columns:
        if col.kind not in ("int", "float", "timestamp") or raw_schema[col.name] != pl.String:
            continue
        missed = typed[col.name].is_null() & typed[_raw(col.name)].is_not_null()
        if not missed.any():
            continue
        rows = missed.arg_true()
        parsed = typed[rows].select(typed_value(pl.col(_raw(col.name)), pl.String, col, cfg))
        slow = parsed.to_series()
        if not slow.is_not_null().any():
            # Nothing more parses (the usual case: the values are bad). Leave the column as it
            # is: a scattered column is one chunk, and beside the others' many chunks it would
            # make every later step of the batch copy all of its columns into one chunk.
            continue
        typed = typed.with_columns(typed[col.name].scatter(rows, slow))
    return typed


def _raw(name: str) -> str:
    return f"_raw_{name}"


def events_rules(cfg: SourceConfig) -> list[pl.Expr]:
    """The source's business rules for typed events: returns from cancellations, fees."""
    event_type, quantity = pl.col("event_type"), pl.col("quantity")
    if cfg.return_order_prefix:
        is_return = pl.col("order_id").str.starts_with(cfg.return_order_prefix).fill_null(False)
        event_type = pl.when(is_return).then(pl.lit("return")).otherwise(event_type)
        quantity = pl.when(is_return).then(quantity.abs()).otherwise(quantity)
    if cfg.negative_quantity_as:
        negative = pl.col("quantity") < 0
        event_type = pl.when(negative).then(pl.lit(cfg.negative_quantity_as)).otherwise(event_type)
        quantity = pl.when(negative).then(quantity.abs()).otherwise(quantity)
    event_type = (
        pl.when(non_product_item(cfg))
        .then(pl.lit(cfg.non_product_event_type))
        .otherwise(event_type)
    )
    return [event_type.alias("event_type"), quantity.alias("quantity")]


def non_product_item(cfg: SourceConfig) -> pl.Expr:
    """True where the row's item_id is configured as not a product (postage, fees, vouchers…)."""
    non_product = pl.lit(False)
    if cfg.non_product_items:
        non_product = non_product | pl.col("item_id").is_in(cfg.non_product_items)
    if cfg.non_product_pattern:
        non_product = non_product | pl.col("item_id").str.contains(cfg.non_product_pattern)
    return non_product.fill_null(False)


def accepted_rows(validated: pl.DataFrame, contract: SourceContract) -> pl.DataFrame:
    """The rows that meet the contract, typed, with their row number in the file."""
    # Columns first: filtering would otherwise copy the raw values beside the typed ones too.
    kept = validated.select(ROW, *contract.names, BAD)
    return kept.filter(pl.col(BAD).not_()).drop(BAD)


def quarantined_rows(
    validated: pl.DataFrame,
    contract: SourceContract,
    cfg: SourceConfig,
    file_name: str,
    *,
    lossy_text: bool = True,
    nul_possible: bool = True,
) -> pl.DataFrame:
    """Rows that break the contract: row number, first bad column, raw value, reasons, record."""
    bad = validated.filter(pl.col(BAD))
    raw_schema = pl.Schema({c: bad.schema[_raw(c)] for c in contract.names})
    checks = _checks(contract, cfg, raw_schema, lossy_text, nul_possible)
    failed = [pl.when(cond.fill_null(False)) for _, cond, _ in checks]
    reasons = pl.concat_str(
        [w.then(pl.lit(msg)) for w, (_, _, msg) in zip(failed, checks, strict=True)],
        separator="; ",
        ignore_nulls=True,
    )
    named = list(zip(failed, [name for name, _, _ in checks], strict=True))
    first_col = pl.coalesce([w.then(pl.lit(name)) for w, name in named])
    first_value = pl.coalesce([w.then(pl.col(_raw(name)).cast(pl.String)) for w, name in named])
    record = pl.struct([pl.col(_raw(c)).cast(pl.String).alias(c) for c in contract.names])
    return bad.select(
        pl.lit(file_name).alias("file"),
        pl.col(ROW).alias("row"),
        first_col.alias("column"),
        first_value.alias("raw_value"),
        reasons.alias("reason"),
        record.struct.json_encode().alias("record"),
    )


def typed_value(
    raw: pl.Expr, raw_dtype: pl.DataType, col: Column, cfg: SourceConfig, *, fast: bool = False
) -> pl.Expr:
    """``raw`` converted to the column's contract type; null where it does not convert.

    ``fast`` reads text as written: numbers untrimmed, timestamps in the canonical ISO spelling
    only (``_with_slow_parses`` gives the rows it misses the full parse).
    """
    target = col.dtype
    if raw_dtype == pl.Null:
        return pl.lit(None, target)
    if raw_dtype == target:
        return raw
    text = raw_dtype == pl.String
    s = raw.str.strip_chars() if text else raw
    match col.kind:
        case "string":
            if raw_dtype.is_float():
                # Spreadsheet exports turn ids into floats (13085.0): keep them as written ids.
                whole = raw.is_finite() & (raw == raw.floor())
                as_int = raw.cast(pl.Int64, strict=False).cast(pl.String)
                return pl.when(whole).then(as_int).otherwise(raw.cast(pl.String))
            return raw.cast(pl.String)
        case "int" if fast and text:
            return raw.cast(pl.Int64, strict=False)
        case "float" if fast and text:
            number = raw.cast(pl.Float64, strict=False)
            return pl.when(number.is_finite()).then(number)
        case "int":
            number = s.cast(pl.Float64, strict=False)
            whole = number.is_finite() & (number == number.round())
            return pl.when(whole).then(number.cast(pl.Int64, strict=False))
        case "float":
            number = s.cast(pl.Float64, strict=False)
            return pl.when(number.is_finite()).then(number)
        case "bool":
            if not text:
                return s.cast(pl.Boolean, strict=False)
            low = s.str.to_lowercase()
            return pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False)
        case "timestamp":
            return _timestamp(raw if fast else s, raw_dtype, cfg, fast=fast)
        case "date":
            if text:
                fmt = cfg.timestamp_format or "%Y-%m-%d"
                return s.str.slice(0, 10 if cfg.timestamp_format is None else None).str.to_date(
                    fmt, strict=False
                )
            if isinstance(raw_dtype, pl.Datetime):
                return s.dt.date()
            return s.cast(pl.Date, strict=False)
    raise AssertionError(col.kind)  # pragma: no cover


def _timestamp(s: pl.Expr, raw_dtype: pl.DataType, cfg: SourceConfig, *, fast: bool) -> pl.Expr:
    utc = pl.Datetime("us", "UTC")

    def local(naive: pl.Expr) -> pl.Expr:
        return (
            naive.cast(pl.Datetime("us"))
            .dt.replace_time_zone(cfg.timezone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
        )

    if isinstance(raw_dtype, pl.Datetime):
        return s.cast(utc) if raw_dtype.time_zone else local(s)
    if raw_dtype == pl.Date:
        return local(s.cast(pl.Datetime("us")))
    if raw_dtype != pl.String:
        return pl.lit(None, utc)
    if cfg.timestamp_format:
        fmt = cfg.timestamp_format
        if "%z" in fmt or "%Z" in fmt:
            return s.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
        return local(s.str.to_datetime(fmt, strict=False, time_unit="us"))
    if fast:
        canonical = s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us")
        return canonical.dt.convert_time_zone("UTC")
    # ISO 8601 in its common spellings: T or space, optional fraction, Z / ±hh:mm / none.
    iso = s.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T").str.replace(r"[Zz]$", "+00:00")
    aware = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us")
    naive = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
    day = iso.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us")
    return pl.coalesce(aware.dt.convert_time_zone("UTC"), local(naive), local(day))


def _guest_user(col: Column, contract: SourceContract, cfg: SourceConfig) -> bool:
    return contract.name == "events" and col.name == "user_id" and cfg.missing_user == "guest"


def _unparseable(col: Column, cfg: SourceConfig) -> str:
    expected = EXPECTED[col.kind]
    if col.kind == "timestamp":
        expected += f" ({cfg.timestamp_format or 'ISO 8601, e.g. 2026-11-27T14:03:00+00:00'})"
    return f"{col.name}: expected {expected}"


def _bad_bytes(col: Column) -> str:
    return (
        f"{col.name}: bytes that are not UTF-8 (if the file uses another encoding, set "
        "`encoding` for this source in nightowl.toml)"
    )


def _quoted(names: list[str], most: int = 20) -> str:
    """Names for a message; a header of garbage stays readable (at most ``most``, each cut)."""
    shown = [f"'{n}'" if len(n) <= 60 else f"'{n[:57]}...'" for n in names[:most]]
    return ", ".join(shown) + (f" and {len(names) - most} more" if len(names) > most else "")
