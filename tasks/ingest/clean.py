"""Clean: deduplicate, normalise and date raw rows; reject what cannot be true as of the run date.

Each function takes the raw rows of one source in arrival order (run date, landing file, row
number; lineage columns ``_run``, ``source_file`` and ``source_row``, and ``_entry``, the landing
file's place in the ledger) and returns them with a
``dt`` partition date and a ``_reason``: null for rows that go to the clean table, a sentence for
rows that go to quarantine. Clean tables keep arrival order: deterministic, and it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import polars as pl

from nightowl.schemas.landing import CONTRACTS, SourceContract
from nightowl.tasks.feedback import redact, text

REASON = "_reason"
SUPERSEDED = "_superseded"
HELD = "_held"
ENTRY = "_entry"
LINEAGE = ["source_file", "source_row"]
#: Rows per bucket when looking for shared key hashes: bounds the hash table's memory.
_HASH_BUCKET_ROWS = 8_000_000


@dataclass(frozen=True)
class CleanSpec:
    """How a source's rows are identified, deduplicated, dated and ordered in its clean table."""

    table: str
    key: tuple[str, ...]
    #: "first": a later row with the same key is a duplicate (quarantined);
    #: "last": a later row with the same key is a correction that supersedes the earlier one.
    keep: str
    #: Column filled with a stable row hash when the source gives no id.
    id_column: str | None = None
    #: Columns cleaning adds that the clean table keeps, after the contract's.
    derived: tuple[str, ...] = ()


SPECS: dict[str, CleanSpec] = {
    "events": CleanSpec("events", ("event_id",), "first", "event_id"),
    "items": CleanSpec("items", ("item_id",), "last"),
    "feedback": CleanSpec(
        "feedback", ("feedback_id",), "first", "feedback_id", derived=("text_chars", "pii")
    ),
    "market_prices": CleanSpec("market_prices", ("date", "item_id", "competitor"), "last"),
    "market_indicators": CleanSpec("market_indicators", ("date", "indicator", "dimension"), "last"),
}


def export_day(source_file: pl.Expr, run: pl.Expr) -> pl.Expr:
    """The day an items row describes: the date in its file's name, else its run date."""
    named = source_file.str.extract(r"(\d{4}-\d{2}-\d{2})", 1).str.to_date(strict=False)
    return pl.coalesce(named, run.cast(pl.String).str.to_date())


def normalised_event_types(event_type: pl.Expr, synonyms: dict[str, str]) -> pl.Expr:
    """Event types lower-cased, trimmed, with spaces/hyphens as underscores and synonyms mapped."""
    low = event_type.str.strip_chars().str.to_lowercase()
    underscored = low.str.replace_all(r"[\s\-]+", "_")
    keys = list(synonyms)
    return (
        pl.when(low.is_in(keys))
        .then(low.replace(synonyms))
        .when(underscored.is_in(keys))
        .then(underscored.replace(synonyms))
        .otherwise(underscored)
    )


def with_row_ids(raw: pl.LazyFrame, spec: CleanSpec) -> pl.LazyFrame:
    """Rows whose missing id is filled with a stable hash of their content (prefix ``rh-``)."""
    if spec.id_column is None:
        return raw
    content = [c for c in CONTRACTS[spec.table].names if c != spec.id_column]
    row_hash = pl.struct(content).hash(seed=0)
    filled = pl.coalesce(pl.col(spec.id_column), pl.format("rh-{}", row_hash))
    return raw.with_columns(filled.alias(spec.id_column))


def arrival_key() -> pl.Expr:
    """A raw row's identity: its landing file's ledger place and its row number, as one integer."""
    return pl.col(ENTRY).cast(pl.UInt64) * (1 << 40) + pl.col("source_row").cast(pl.UInt64)


def later_duplicates(raw: pl.LazyFrame, spec: CleanSpec) -> pl.Series:
    """Arrival keys of the rows whose key an earlier row (in arrival order) already has.

    Memory stays near 16 bytes a row however many rows there are: one streaming pass keeps each
    row's key hash, rows sharing a hash (the duplicates, and the rare hash collision) are found
    a bucket of hashes at a time, and only those rows are read again to compare the keys exactly.
    """
    keyed = with_row_ids(raw, spec)
    key = row_key(spec)
    hashes = keyed.select(arrival_key().alias("k"), key.hash(seed=0).alias("h")).collect(
        engine="streaming"
    )
    buckets = max(1, hashes.height // _HASH_BUCKET_ROWS)
    shared = [
        keys_sharing_a_hash(hashes.filter(pl.col("h") % buckets == b) if buckets > 1 else hashes)
        for b in range(buckets)
    ]
    candidates = pl.concat(shared)
    del hashes
    if candidates.is_empty():
        return candidates
    exact = keyed.filter(arrival_key().is_in(candidates.implode())).select(
        arrival_key().alias("k"), key.alias("key")
    )
    return exact.filter(pl.col("key").is_first_distinct().not_()).collect()["k"]


def row_key(spec: CleanSpec) -> pl.Expr:
    """What makes two rows the same row: the spec's key, on the same partition day.

    Scoping keys to their day makes a day's clean partition a function of the rows dated that
    day alone, whichever days a run happens to clean together (an id reused on another day is
    another row)."""
    contract = CONTRACTS[spec.table]
    parts = [pl.col(c) for c in spec.key]
    if contract.partition_column is not None and contract.partition_column not in spec.key:
        parts.append(partition_day(contract).alias("_day"))
    return pl.struct(parts) if len(parts) > 1 else parts[0]


def keys_sharing_a_hash(hashes: pl.DataFrame) -> pl.Series:
    """Keys (``k``) of the rows whose hash (``h``) another row has too."""
    # Sorting the hashes alone and comparing neighbours finds the few shared ones; a lookup then
    # picks their rows. About 4x faster than a hash table over all rows (is_duplicated), and
    # 2.5x faster than sorting the rows by hash (which moves the keys too).
    h = hashes["h"].sort()
    shared = h.filter(h == h.shift(1)).unique()
    return hashes.filter(pl.col("h").is_in(shared.implode()))["k"]


def cleaned_events(
    raw: pl.LazyFrame,
    synonyms: dict[str, str],
    cutoff: datetime,
    duplicates: pl.Series | None = None,
    spec: CleanSpec = SPECS["events"],
    horizon: datetime | None = None,
) -> pl.LazyFrame:
    """Events with normalised types, quantity 1 when unset, ids, dates and a verdict per row
    (``duplicates``: see ``cleaned_rows``; ``spec``: see ``ids_given``)."""
    # Normalise the few distinct spellings, not every row: a lookup is far cheaper than a regex.
    spellings = raw.select(pl.col("event_type").unique()).collect().to_series()
    normal = pl.DataFrame({"t": spellings}).select(normalised_event_types(pl.col("t"), synonyms))
    mapping = dict(zip(spellings.to_list(), normal.to_series().to_list(), strict=True))
    normal_rows = raw.with_columns(
        pl.col("event_type").replace_strict(mapping, return_dtype=pl.String),
        pl.col("quantity").fill_null(1),
    )
    return cleaned_rows(normal_rows, spec, cutoff, duplicates, horizon)


def cleaned_feedback(
    raw: pl.LazyFrame,
    cutoff: datetime,
    max_chars: int = 5000,
    phone_region: str = "GB",
    duplicates: pl.Series | None = None,
    spec: CleanSpec = SPECS["feedback"],
    horizon: datetime | None = None,
) -> pl.LazyFrame:
    """Feedback as plain text (HTML tags and entities gone), cut to ``max_chars`` with its
    length before the cut in ``text_chars``, personal data replaced by typed placeholders (the
    kinds in ``pii``; the raw layer keeps the original), a lower-case channel (default review),
    ids, dates and verdicts."""
    # Ids from the content as written: two tickets differing only in a phone number must not
    # become duplicates once both say [PHONE], nor get new ids when the cap or redaction change.
    plain = with_row_ids(raw, spec).with_columns(
        text.plain_text(pl.col("text")),
        text.plain_text(pl.col("title")),
        pl.col("channel").str.strip_chars().str.to_lowercase().fill_null("review"),
    )
    redacted = plain.with_columns(
        pl.col("text").str.len_chars().alias("text_chars"),
        # Redact before cutting: a cut must not split a card number into two harmless halves.
        _redacted(pl.col("text"), phone_region).alias("_text"),
        _redacted(pl.col("title"), phone_region).alias("_title"),
    ).with_columns(
        text.capped_text(pl.col("_text").struct.field("text"), max_chars).alias("text"),
        pl.col("_title").struct.field("text").alias("title"),
        pl.concat_list(pl.col("_text").struct.field("pii"), pl.col("_title").struct.field("pii"))
        .list.unique()
        .list.sort()
        .alias("pii"),
    )
    # Ids are filled above, from the raw text: cleaned_rows need not hash every row again.
    verdicts = cleaned_rows(
        redacted.drop("_text", "_title"),
        replace(spec, id_column=None),
        cutoff,
        duplicates,
        horizon,
    )
    nothing = (pl.col("text").fill_null("") == "") & pl.col("rating").is_null() & ~pl.col(HELD)
    emptied = pl.lit("text: nothing left once the HTML is removed, and no rating to score")
    return verdicts.with_columns(
        pl.coalesce(pl.col(REASON), pl.when(nothing).then(emptied)).alias(REASON)
    )


def redacted_values(column: pl.Expr, phone_region: str = "GB") -> pl.Expr:
    """``column`` with personal data replaced by typed placeholders (quarantined feedback)."""
    return _redacted(column, phone_region).struct.field("text")


def _redacted(column: pl.Expr, phone_region: str) -> pl.Expr:
    return column.map_batches(
        lambda s: redact.redacted_text(s, phone_region).to_struct(),
        return_dtype=pl.Struct({"text": pl.String, "pii": pl.List(pl.String)}),
    )


def cleaned_market_prices(
    raw: pl.LazyFrame, cutoff: datetime, outlier_ratio: float, horizon: datetime | None = None
) -> pl.LazyFrame:
    """Competitor prices with verdicts; a price ``outlier_ratio`` times off the median of the
    item's competitor prices that day (three or more of them) is an outlier, not a price."""
    rows = cleaned_rows(raw, SPECS["market_prices"], cutoff, horizon=horizon)
    live = pl.col(REASON).is_null() & pl.col(SUPERSEDED).not_() & pl.col(HELD).not_()
    day = ["date", "item_id"]
    median = pl.col("price").filter(live).median().over(day)
    ratio = pl.col("price") / median
    outlier = (
        live & (live.sum().over(day) >= 3) & ((ratio > outlier_ratio) | (ratio < 1 / outlier_ratio))
    )
    reason = pl.format(
        "price: {} is {}x the median competitor price {} for this item that day "
        f"(more than price_outlier_ratio {outlier_ratio:g} away)",
        pl.col("price"),
        ratio.round(2),
        median.round(2),
    )
    return rows.with_columns(pl.when(outlier).then(reason).otherwise(pl.col(REASON)).alias(REASON))


def items_in_force(raw_items: pl.LazyFrame, run_date: date) -> pl.LazyFrame:
    """Items rows of exports dated on or before ``run_date``, oldest export first (arrival order
    within one): a plan for a later day waits in the raw layer until its day."""
    day = export_day(pl.col("source_file"), pl.col("_run"))
    return raw_items.filter(day <= run_date).sort(day, maintain_order=True)


def cleaned_rows(
    raw: pl.LazyFrame,
    spec: CleanSpec,
    cutoff: datetime,
    duplicates: pl.Series | None = None,
    horizon: datetime | None = None,
) -> pl.LazyFrame:
    """Rows with ``dt``, ``_reason`` (duplicate, too far in the future), ``_superseded`` and
    ``_held`` (dated after ``cutoff`` but not after ``horizon``: early, waiting for their day).

    Without a ``horizon``, every row dated after ``cutoff`` is rejected as in the future.
    ``duplicates`` are the arrival keys of later duplicates (``later_duplicates``) when ``raw``
    is one slice of a larger set of rows; by default they are found in ``raw`` itself, among
    the rows not held."""
    contract = CONTRACTS[spec.table]
    ordered = with_row_ids(raw, spec)
    time_col = contract.partition_column
    held = pl.lit(False)
    if time_col is not None and horizon is not None:
        held = after(contract, cutoff) & after(contract, horizon).not_()
    checks = []
    if spec.keep == "first":
        if duplicates is None:
            judged = raw if horizon is None or time_col is None else raw.filter(held.not_())
            duplicates = later_duplicates(judged, spec)
        checks.append(
            pl.when(arrival_key().is_in(duplicates.implode())).then(
                pl.lit(f"duplicate of an earlier row with the same {', '.join(spec.key)}")
            )
        )
    if time_col is not None:
        if horizon is None:
            shown = _instant(contract, cutoff)
            reason = f"{time_col}: in the future (after {shown}, the run date plus tolerance)"
            checks.append(pl.when(after(contract, cutoff)).then(pl.lit(reason)))
        else:
            # The horizon moves with every night: the reason must not, or it would differ with
            # the night that happened to judge the row.
            reason = (
                f"{time_col}: too far in the future (more than future_horizon_days after the "
                "latest run date); expected a date that can be true"
            )
            checks.append(pl.when(after(contract, horizon)).then(pl.lit(reason)))
    first_reason = pl.coalesce(checks) if checks else pl.lit(None, pl.String)
    superseded = (
        pl.struct(list(spec.key)).is_last_distinct().not_()
        if spec.keep == "last"
        else pl.lit(False)
    )
    out = ordered.with_columns(
        pl.when(held).then(None).otherwise(first_reason).alias(REASON),
        (superseded & held.not_()).alias(SUPERSEDED),
        held.alias(HELD),
    )
    if time_col is not None:
        out = out.with_columns(partition_day(contract).alias("dt"))
    return out


def after(contract: SourceContract, instant: datetime) -> pl.Expr:
    """True where a row is dated after ``instant`` (a date column: a day starting after it
    less a microsecond, so that a day that starts before ``instant`` is not after it)."""
    name = _dated_column(contract)
    column = pl.col(name)
    if contract.column(name).kind == "date":
        return column > (instant - timedelta(microseconds=1)).date()
    return column > instant


def _dated_column(contract: SourceContract) -> str:
    """The partition column of a dated source; a snapshot has none, and no row of it is dated."""
    if contract.partition_column is None:
        raise ValueError(f"{contract.name} is a snapshot: its rows have no partition date")
    return contract.partition_column


def _instant(contract: SourceContract, instant: datetime) -> str:
    if contract.column(_dated_column(contract)).kind == "date":
        return (instant - timedelta(microseconds=1)).date().isoformat()
    return instant.isoformat()


def accepted_clean_rows(verdicts: pl.LazyFrame, spec: CleanSpec) -> pl.LazyFrame:
    """The clean table's rows: contract columns then lineage, in arrival order."""
    cols = [*CONTRACTS[spec.table].names, *spec.derived, *LINEAGE]
    dated = ["dt"] if "dt" in verdicts.collect_schema() else []
    kept = pl.col(REASON).is_null() & pl.col(SUPERSEDED).not_() & _not_held(verdicts)
    return verdicts.filter(kept).select(*cols, *dated)


def held_rows(verdicts: pl.LazyFrame, spec: CleanSpec, tolerance_hours: float) -> pl.LazyFrame:
    """Early rows, as the clean table will have them, and ``waits_for``: the first run date
    whose cutoff reaches them (when they move into the clean table)."""
    cols = [*CONTRACTS[spec.table].names, *spec.derived, *LINEAGE]
    contract = CONTRACTS[spec.table]
    if contract.partition_column is None:  # a snapshot: nothing in it is early
        return verdicts.filter(pl.lit(False)).select(
            *cols, pl.lit(None, pl.Date).alias("waits_for"), "dt"
        )
    time_col = pl.col(contract.partition_column)
    if contract.column(contract.partition_column).kind == "date":
        time_col = time_col.cast(pl.Datetime("us", "UTC")) + pl.duration(microseconds=1)
    # future_cutoff(d) = d + 1 day + tolerance must reach the row: d >= t - 1 day - tolerance.
    earliest = (
        time_col - pl.duration(days=1) - pl.duration(microseconds=int(tolerance_hours * 3.6e9))
    )
    # The day that instant falls on, rounded up: a microsecond back, then the next day.
    waits_for = (earliest - pl.duration(microseconds=1)).dt.date() + pl.duration(days=1)
    return verdicts.filter(pl.col(HELD)).select(*cols, waits_for.alias("waits_for"), "dt")


def _not_held(verdicts: pl.LazyFrame) -> pl.Expr:
    return pl.col(HELD).not_() if HELD in verdicts.collect_schema() else pl.lit(True)


def rejected_clean_rows(verdicts: pl.LazyFrame, spec: CleanSpec) -> pl.LazyFrame:
    """Rows rejected while cleaning, in the quarantine's shape (file, row, column, reason…)."""
    contract = CONTRACTS[spec.table]
    # A reason starts with the column it is about ("price: ..."); a duplicate is about the key.
    named = pl.col(REASON).str.extract(r"^(\w+):", 1)
    column = (
        pl.when(pl.col(REASON).str.starts_with("duplicate"))
        .then(pl.lit(spec.key[0]))
        .when(named.is_in(contract.names))
        .then(named)
        .otherwise(pl.lit(contract.partition_column or spec.key[0]))
    )
    raw_value = pl.coalesce(
        pl.when(pl.col("column") == name).then(pl.col(name).cast(pl.String))
        for name in contract.names
    )
    dated = ["dt"] if "dt" in verdicts.collect_schema() else []
    rejected = verdicts.filter(
        pl.col(REASON).is_not_null() & pl.col(SUPERSEDED).not_() & _not_held(verdicts)
    )
    return rejected.with_columns(column.alias("column")).select(
        pl.col("source_file").alias("file"),
        pl.col("source_row").alias("row"),
        "column",
        raw_value.alias("raw_value"),
        pl.col(REASON).alias("reason"),
        pl.struct(contract.names).struct.json_encode().alias("record"),
        *dated,
    )


def partition_day(contract: SourceContract) -> pl.Expr:
    """The clean partition date (``dt``) of a raw row of a dated source."""
    name = _dated_column(contract)
    day = pl.col(name)
    return day if contract.column(name).kind == "date" else day.dt.date()


def on_days(contract: SourceContract, days: list[str]) -> pl.Expr:
    """Rows dated on one of ``days``; the range around them lets Parquet skip other row groups."""
    dates = sorted(date.fromisoformat(d) for d in days)
    name = _dated_column(contract)
    column = pl.col(name)
    if contract.column(name).kind == "date":
        around = column.is_between(dates[0], dates[-1])
    else:
        first = datetime.combine(dates[0], datetime.min.time(), UTC)
        end = datetime.combine(dates[-1] + timedelta(days=1), datetime.min.time(), UTC)
        around = (column >= first) & (column < end)
    return around & partition_day(contract).is_in(dates)


@dataclass(frozen=True)
class RawCounts:
    """Raw rows per partition date of a dated source, and how many of them lack an id."""

    per_day: dict[str, int]
    missing_ids: int


def raw_counts(raw: pl.LazyFrame, spec: CleanSpec) -> RawCounts:
    """Raw rows per partition date and rows without an id (one streaming pass, two columns)."""
    contract = CONTRACTS[spec.table]
    missing = pl.col(spec.id_column).null_count() if spec.id_column else pl.lit(0, pl.UInt32)
    counts = (
        raw.group_by(partition_day(contract).alias("dt"))
        .agg(pl.len(), missing.alias("missing"))
        .collect(engine="streaming")
    )
    per_day = {d.isoformat(): n for d, n in counts.select("dt", "len").iter_rows()}
    return RawCounts(per_day, int(counts["missing"].sum()))


def summed_counts(counts: list[RawCounts]) -> RawCounts:
    """The counts of several sets of raw rows taken together."""
    per_day: dict[str, int] = {}
    for c in counts:
        for day, n in c.per_day.items():
            per_day[day] = per_day.get(day, 0) + n
    return RawCounts(dict(sorted(per_day.items())), sum(c.missing_ids for c in counts))


def ids_given(spec: CleanSpec, counts: RawCounts) -> CleanSpec:
    """``spec`` with nothing to fill when every row has its id (no row needs a content hash)."""
    return replace(spec, id_column=None) if counts.missing_ids == 0 else spec


def day_slices(days: list[str], rows: dict[str, int], max_rows: int) -> list[list[str]]:
    """``days`` in order, cut into runs of at most ``max_rows`` rows (a bigger day alone)."""
    slices: list[list[str]] = []
    held = 0
    for day in days:
        n = rows.get(day, 0)
        if slices and held + n <= max_rows:
            slices[-1].append(day)
            held += n
        else:
            slices.append([day])
            held = n
    return slices


def future_cutoff(run_date: date, tolerance_hours: float) -> datetime:
    """The latest instant a row may carry in a run for ``run_date``: its end plus the tolerance."""
    end = datetime(run_date.year, run_date.month, run_date.day, tzinfo=UTC) + timedelta(days=1)
    return end + timedelta(hours=tolerance_hours)
