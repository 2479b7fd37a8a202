"""Ingest: map a landing file's columns onto its contract, type every value, split good from bad.

The caller opens the file and streams it through in batches (:func:`mapped_rows` is lazy;
:func:`validated_rows` and the splits work on one batch), so a file of any size needs bounded
memory, and decides where the accepted and quarantined rows are written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from nightowl.errors import NightowlError
from nightowl.schemas.landing import EXPECTED, Column, SourceContract
from nightowl.schemas.sources import SourceConfig
from nightowl.warehouse.landing import READER_COLUMNS, truncation_reasons

ROW = "_row"
BAD = "_bad"
#: Why a row was cut short in the file (see warehouse.landing.truncation_reasons), null if whole.
TRUNCATED = "_truncated"

#: Longer text than this is not data but an accident or an attack (a whole file in one field).
MAX_VALUE_BYTES = 100_000
_DUPLICATE = "_duplicated_"  # how Polars' CSV reader renames a repeated header

_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


class MappingError(NightowlError):
    """The file's columns cannot be mapped onto the contract (a file-level problem)."""


@dataclass(frozen=True)
class ColumnPlan:
    """How a file's columns become contract columns: renames, constants, and what is dropped."""

    renames: dict[str, str]
    constants: dict[str, str | int | float | bool]
    unknown: list[str] = field(default_factory=list)
    #: One line per dropped column that looks meant for a contract column, for the caller to log.
    suggestions: list[str] = field(default_factory=list)


def normalised(name: str) -> str:
    """A column name as matched to contract names: trimmed, lower-case, spaces and hyphens as
    underscores (``" Order ID"``, ``order-id`` and ``ORDER_ID`` all read ``order_id``)."""
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def column_plan(file_columns: list[str], contract: SourceContract, cfg: SourceConfig) -> ColumnPlan:
    """Which file column feeds each contract column; raises MappingError naming what is missing.

    A column mapped in ``cfg.columns`` feeds its target: the mapping's name is matched to the
    header exactly, else as :func:`normalised` (once: two matching headers are an error). Any
    other column feeds the contract column its normalised name is; a mapping wins over a name.
    Two headers feeding one contract column are a MappingError naming both. The reader's own
    columns (``READER_COLUMNS``) are not file columns."""
    file_columns = [c for c in file_columns if c not in READER_COLUMNS]
    repeated = sorted({c.split(_DUPLICATE)[0] for c in file_columns if _DUPLICATE in c})
    if repeated:
        raise MappingError(
            f"the header names {_quoted(repeated)} more than once; expected each column once, "
            "since which of them holds the value cannot be told"
        )
    mapped = _mapped_columns(file_columns, cfg)
    bad_targets = [dst for dst in cfg.columns.values() if dst not in contract.names]
    bad_targets += [dst for dst in cfg.constants if dst not in contract.names]
    if bad_targets:
        raise MappingError(
            f"the mapping targets {_quoted(bad_targets)}, which are not {contract.name} columns "
            f"(expected some of: {_quoted(contract.names)})"
        )
    by_name = {normalised(n): n for n in contract.names}
    feeders: dict[str, list[str]] = {}
    for src in file_columns:
        if src in mapped:
            feeders.setdefault(mapped[src], []).append(src)
    for src in file_columns:
        dst = by_name.get(normalised(src))
        if src not in mapped and dst is not None and dst not in mapped.values():
            feeders.setdefault(dst, []).append(src)
    for dst, srcs in feeders.items():
        if len(srcs) > 1:
            how = "are mapped onto" if all(s in mapped for s in srcs) else "all read as"
            raise MappingError(
                f"the header columns {_quoted(srcs)} {how} the {contract.name} column '{dst}'; "
                f"expected one column for it (map the one to use under "
                f"[sources.{contract.name}.columns])"
            )
    chosen = {srcs[0]: dst for dst, srcs in feeders.items()}
    renames = {src: chosen[src] for src in file_columns if src in chosen}
    constants = {k: v for k, v in cfg.constants.items() if k not in renames.values()}
    present = set(renames.values()) | set(constants)
    # A guest is a row without a user, not a file without the column (a forgotten mapping),
    # unless guest mode was chosen on purpose for a source that has no users at all.
    if (
        contract.name == "events"
        and cfg.missing_user == "guest"
        and "missing_user" in cfg.model_fields_set
    ):
        present.add("user_id")
    unknown = [c for c in file_columns if c not in renames]
    suggestions = _suggestions(unknown, renames, constants, contract)
    missing = [c for c in contract.required if c not in present]
    if missing:
        hints = [line for line in suggestions if any(f"mean {m}?" in line for m in missing)]
        raise MappingError(
            f"required column {_quoted(missing)} is missing; expected the {contract.name} columns "
            f"{_quoted(contract.required)} (columns found: {_quoted(file_columns)}); map them "
            f"under [sources.{contract.name}.columns] in nightowl.toml"
            + "".join(f" ({hint})" for hint in hints)
        )
    return ColumnPlan(renames, constants, unknown, suggestions)


def _mapped_columns(file_columns: list[str], cfg: SourceConfig) -> dict[str, str]:
    """File column → contract column, for the columns ``cfg.columns`` maps."""
    mapped: dict[str, str] = {}
    named: dict[str, str] = {}  # file column → the mapping's name for it
    missing = []
    for name, dst in cfg.columns.items():
        alike = [c for c in file_columns if normalised(c) == normalised(name)]
        src = name if name in file_columns else alike[0] if len(alike) == 1 else None
        if src is None and alike:
            raise MappingError(
                f"the column mapping names '{name}', which matches the header columns "
                f"{_quoted(alike)}; expected it to name one of them exactly"
            )
        if src is None:
            missing.append(name)
        elif src in mapped:
            raise MappingError(
                f"the column mapping names the header column '{src}' twice (as "
                f"'{named[src]}' and '{name}'); expected it once"
            )
        else:
            mapped[src], named[src] = dst, name
    if missing:
        raise MappingError(
            f"the column mapping names {_quoted(missing)}, which the file does not have "
            f"(columns found: {_quoted(file_columns)})"
        )
    return mapped


def _suggestions(
    unknown: list[str],
    renames: dict[str, str],
    constants: Mapping[str, object],
    contract: SourceContract,
) -> list[str]:
    """A warning for each dropped column that looks meant for a contract column."""
    fed = {dst: src for src, dst in renames.items()}
    unfed = [n for n in contract.names if n not in fed and n not in constants]
    where = f"[sources.{contract.name}.columns]"
    lines = []
    for col in unknown:
        name = normalised(col)
        if name in fed:
            lines.append(f"column '{col}' is not used: {name} is read from '{fed[name]}'")
        elif name in constants:
            lines.append(f"column '{col}' is not used: {name} is a constant of the source")
        elif close := difflib.get_close_matches(name, unfed, n=1, cutoff=0.8):
            lines.append(
                f"column '{col}' is not mapped; did you mean {close[0]}? map it under {where}"
            )
    return lines


def mapped_rows(lf: pl.LazyFrame, plan: ColumnPlan, contract: SourceContract) -> pl.LazyFrame:
    """The file's rows with contract column names, a 1-based row number and constants filled in
    (and the reader's own columns, which validation reads)."""
    present = lf.collect_schema()
    out = lf.with_row_index(ROW, offset=1).select(
        pl.col(ROW).cast(pl.Int64),
        *(pl.col(src).alias(dst) for src, dst in plan.renames.items()),
        *(pl.lit(value).alias(name) for name, value in plan.constants.items()),
        *(pl.col(c) for c in READER_COLUMNS if c in present),
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
    truncated = truncation_reasons(frame, ROW)
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
    if truncated is not None:  # a row cut short in the file: its values cannot be trusted
        typed = typed.with_columns(truncated.alias(TRUNCATED))
        bad.append(pl.col(TRUNCATED).is_not_null())
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
        parsed = typed[rows].select(typed_value(pl.col(_raw(col.name)), pl.String(), col, cfg))
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
    """Rows that break the contract: row number, first bad column, raw value, reasons, record.

    A row cut short in the file has that as its only reason, and no column or raw value: the
    values it does have are in the record."""
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
    if TRUNCATED in bad.columns:
        whole = pl.col(TRUNCATED).is_null()
        reasons = pl.when(whole).then(reasons).otherwise(pl.col(TRUNCATED))
        first_col, first_value = pl.when(whole).then(first_col), pl.when(whole).then(first_value)
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
        if re.search(r"%[:#]*z|%Z|%\+", fmt):  # every spelling of an offset
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
