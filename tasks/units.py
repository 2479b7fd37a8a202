"""Units of nightly work that read and write the warehouse: ingest a source, clean a table.

They return small reports (counts, hashes, manifest references), never frames, so that Prefect can
persist and hash them cheaply.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path

import polars as pl
from pydantic import BaseModel, Field

from schemas.config import (
    RAW_COMPRESSION,
    CheckSettings,
    FeedbackSettings,
    MarketSettings,
    RawCompression,
    SourceConfig,
)
from schemas.landing import CONTRACTS
from tasks import checks, clean, ingest
from tasks.deadline import check_time
from warehouse.crash import crash_point
from warehouse.landing import (
    LandingError,
    LandingFile,
    date_in_name,
    landing_files,
    open_landing,
    reader_problem,
)
from warehouse.ledger import DateRows, Ledger, LedgerEntry
from warehouse.manifest import InputRef, file_sha256
from warehouse.store import Warehouse, write_parquet

log = logging.getLogger("nightowl")
#: Rows per batch streamed through validation: bounded memory whatever the file size.
BATCH_ROWS = 500_000
#: Raw rows cleaned at once (the days of one slice): about 1.5 GiB of events at the peak.
CLEAN_CHUNK_ROWS = 4_000_000  # Settings.clean_chunk_rows


class IngestFailed(Exception):
    """Some landing files could not be read; the others were ingested."""


class IngestReport(BaseModel):
    """What one source's ingest did for a run date."""

    source: str
    run_date: str
    files: list[LedgerEntry] = Field(description="files whose rows are in raw dt=run_date")
    newly_ingested: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="unchanged re-drops")
    content_hash: str = ""
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return sum(e.rows_read for e in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(e.rows_quarantined for e in self.files)


class CleanReport(BaseModel):
    """What cleaning one table did for a run date: partitions republished and row accounting."""

    table: str
    run_date: str
    partitions: dict[str, str] = Field(description="dt → content hash of the clean partition")
    rows_in: int
    rows_out: int
    duplicates: int
    future: int
    superseded: int
    outliers: int = Field(default=0, description="competitor prices quarantined as outliers")
    seconds: float = 0.0


def quarantine_table(source: str, stage: str) -> str:
    """Quarantine table folder for a source and stage (ingest or clean)."""
    return f"source={source}/stage={stage}"


def ingest_source(
    wh: Warehouse,
    source: str,
    cfg: SourceConfig,
    run_date: date,
    config_dir: Path,
    *,
    force: bool = False,
    phone_region: str = "GB",
    raw_compression: RawCompression = RAW_COMPRESSION,
) -> IngestReport:
    """Ingest every new landing file of a source into raw dt=run_date; fail if any is unreadable.
    Quarantined feedback has its personal data redacted (``phone_region``: see the settings);
    raw parts are compressed with ``raw_compression``.

    ``force`` reads again the files already ingested for this run date (their raw rows and
    quarantine are replaced); files ingested for other dates stay as they are.
    """
    started = time.perf_counter()
    with wh.lock(f"source-{source}"):  # runs for other dates may be ingesting this source
        report = _ingest_source(
            wh, source, cfg, run_date, config_dir, force=force, phone_region=phone_region,
            raw_compression=raw_compression,
        )  # fmt: skip
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _ingest_source(
    wh: Warehouse,
    source: str,
    cfg: SourceConfig,
    run_date: date,
    config_dir: Path,
    *,
    force: bool,
    phone_region: str,
    raw_compression: RawCompression,
) -> IngestReport:
    ledger = Ledger(wh)
    wh.sweep_temporaries()  # what a crashed run left behind an hour or more ago
    part = {"dt": run_date.isoformat()}
    report = IngestReport(source=source, run_date=part["dt"], files=[])
    failures: list[str] = []
    # A file whose path, size and change time match its ledger entry is not read again to hash it
    # (the landing folder keeps every earlier night's files).
    seen = {(e.file, e.bytes, e.mtime_ns): e for e in ledger.entries(source)}
    for file in landing_files(source, cfg, run_date, wh.data_root, config_dir):
        check_time()
        stat = file.path.stat()
        known = seen.get((str(file.path), stat.st_size, stat.st_mtime_ns))
        sha = known.sha256 if known else file_sha256(file.path)
        entry = ledger.get(source, sha)
        if entry is not None and entry.run_date != part["dt"]:
            # Earlier nights' files stay in landing: only a copy under a new name is news.
            log.log(
                logging.INFO if entry.name != file.name else logging.DEBUG,
                "%s: %s has the same content as %s, ingested for %s; skipped",
                source, file.name, entry.name, entry.run_date,
            )  # fmt: skip
            report.skipped.append(file.name)
            continue
        if entry is None or force:
            try:
                entry = ingest_file(
                    wh, source, file, sha, cfg, run_date, stat=stat, phone_region=phone_region,
                    raw_compression=raw_compression,
                )  # fmt: skip
            except (LandingError, ingest.MappingError) as exc:
                failures.append(
                    str(exc) if isinstance(exc, LandingError) else f"{file.path}: {exc}"
                )
                continue
            ledger.record(entry)
            report.newly_ingested.append(file.name)
            log.debug(
                "%s: %s → %d rows read, %d accepted, %d quarantined",
                source, file.name, entry.rows_read, entry.rows_accepted, entry.rows_quarantined,
            )  # fmt: skip
        report.files.append(entry)
    for table in ("raw", "quarantine"):
        name = source if table == "raw" else quarantine_table(source, "ingest")
        if wh.partition_dir(table, name, part).exists():
            manifest = wh.seal_partition(table, name, part, inputs=[e.ref for e in report.files])
            if table == "raw":
                report.content_hash = manifest.content_hash
    log.info(
        "%s: %d new file(s), %d unchanged skipped, %d unreadable; %d rows read, %d quarantined",
        source, len(report.newly_ingested), len(report.skipped), len(failures), report.rows_read,
        report.rows_quarantined,
    )  # fmt: skip
    if failures:
        raise IngestFailed(
            f"{len(failures)} {source} file(s) could not be ingested (the others were):\n"
            + "\n".join(f"  - {f}" for f in failures)
        )
    return report


def ingest_file(
    wh: Warehouse,
    source: str,
    file: LandingFile,
    sha: str,
    cfg: SourceConfig,
    run_date: date,
    *,
    stat: os.stat_result | None = None,
    phone_region: str = "GB",
    raw_compression: RawCompression = RAW_COMPRESSION,
) -> LedgerEntry:
    """Stream one landing file into raw Parquet parts and a quarantine file; return its entry.

    Accepted rows are written one part per batch (Polars writes a part far faster than an
    appending writer can), named ``<file hash>-<n>.parquet``.
    """
    stat = stat or file.path.stat()
    contract = CONTRACTS[source]
    part = {"dt": run_date.isoformat()}
    stem = sha[:16]
    staging = wh.tmp_dir / f".tmp-{source}-{stem}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with open_landing(file, cfg, wh.tmp_dir) as opened:
            lf = opened.rows
            # The config's constants are values of every row too.
            nul = opened.nul_possible or any("\x00" in str(v) for v in cfg.constants.values())
            text = {"lossy_text": opened.lossy, "nul_possible": nul}
            if not lf.collect_schema().names():  # an empty JSON Lines file: zero rows, no columns
                unmapped = [c for c in contract.names if c not in cfg.columns.values()]
                lf = pl.LazyFrame(schema=dict.fromkeys([*cfg.columns, *unmapped], pl.String))
            plan = ingest.column_plan(lf.collect_schema().names(), contract, cfg)
            mapped = ingest.mapped_rows(lf, plan, contract)
            rejected: list[pl.DataFrame] = []
            parts: list[Path] = []
            counted: list[clean.RawCounts] = []  # per batch: what cleaning needs to know
            rows_read = accepted = 0
            # Neither validating a batch nor encoding its part keeps both cores busy alone, so
            # each part is written in the background while the next batch is validated (10M
            # Parquet rows: 4.5 s → 4.3 s). One write at a time: at most two batches are held.
            writer = _PartWriter(f"{source}/{file.name}", raw_compression)
            try:
                for batch in mapped.collect_batches(chunk_size=BATCH_ROWS):
                    check_time()
                    checked = ingest.validated_rows(batch, contract, cfg, **text)
                    good = ingest.accepted_rows(checked, contract)
                    if good.height or not parts:  # the first part keeps the schema if all is bad
                        parts.append(staging / f"{stem}-{len(parts):05d}.parquet")
                        writer.write(good, parts[-1])
                    rows_read += batch.height
                    accepted += good.height
                    if contract.partition_column is not None:
                        counted.append(clean.raw_counts(good.lazy(), clean.SPECS[source]))
                    if checked[ingest.BAD].any():
                        rejected.append(
                            ingest.quarantined_rows(checked, contract, cfg, file.name, **text)
                        )
                writer.finish()
            except pl.exceptions.PolarsError as exc:
                problem = f"could not be read to the end ({reader_problem(exc)})"
                raise LandingError(file.path, problem) from exc
            finally:
                writer.close()
            if not parts:  # no batch at all: a header-only file
                empty = ingest.validated_rows(mapped.head(0).collect(), contract, cfg, **text)
                parts.append(staging / f"{stem}-00000.parquet")
                write_parquet(ingest.accepted_rows(empty, contract), parts[-1], raw_compression)
        quarantined = sum(r.height for r in rejected)
        if rows_read != accepted + quarantined:
            raise AssertionError(
                f"{file.path}: row accounting is off: read {rows_read}, accepted {accepted}, "
                f"quarantined {quarantined}"
            )
        counts = clean.summed_counts(counted) if contract.partition_column else None
        dates = list(counts.per_day) if counts and counts.per_day else [part["dt"]]
        by_date = [DateRows(dt=d, rows=n) for d, n in counts.per_day.items()] if counts else None
        # Parts a crashed earlier attempt left (it never reached the ledger) must not linger.
        for leftover in wh.partition_dir("raw", source, part).glob(f"{stem}-*.parquet"):
            leftover.unlink()
        raw_paths = [wh.add_file("raw", source, part, p.name, p) for p in parts]
        if rejected:
            bad = staging / f"{stem}.parquet"
            rows = pl.concat(rejected)
            if source == "feedback":  # the raw text stays in raw/ alone, not in quarantine too
                rows = rows.with_columns(
                    clean.redacted_values(pl.col(c), phone_region).alias(c)
                    for c in ("raw_value", "record")
                )
            write_parquet(rows, bad)
            wh.add_file("quarantine", quarantine_table(source, "ingest"), part, bad.name, bad)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return LedgerEntry(
        source=source,
        file=str(file.path),
        name=file.name,
        sha256=sha,
        bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,  # as when it was hashed: a later change must hash again
        format=file.format + (".gz" if file.compressed else ""),
        run_date=part["dt"],
        raw_files=[str(p.relative_to(wh.root)) for p in raw_paths],
        rows_read=rows_read,
        rows_accepted=accepted,
        rows_quarantined=quarantined,
        unknown_columns=plan.unknown,
        dates=dates,
        rows_by_date=by_date,
        rows_without_id=counts.missing_ids if counts else None,
        id_column=clean.SPECS[source].id_column,
        code_version=wh.code_version,
    )


class _PartWriter:
    """Writes raw parts one at a time in a background thread; ``finish`` waits for the last.

    A failed write is raised by the next ``write`` or by ``finish``."""

    def __init__(self, where: str, compression: RawCompression) -> None:
        self._where, self._compression = where, compression
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-part")
        self._pending: Future[None] | None = None

    def write(self, frame: pl.DataFrame, path: Path) -> None:
        self.finish()
        self._pending = self._pool.submit(self._write, frame, path)

    def _write(self, frame: pl.DataFrame, path: Path) -> None:
        write_parquet(frame, path, self._compression)
        crash_point("ingest-part", self._where)

    def finish(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for a write still running (its error, if any, is not raised) and stop."""
        self._pool.shutdown(wait=True)


def clean_source(
    wh: Warehouse,
    source: str,
    cfg: SourceConfig,
    run_date: date,
    tolerance_hours: float,
    outlier_ratio: float = MarketSettings().price_outlier_ratio,
    feedback: FeedbackSettings | None = None,
    chunk_rows: int = CLEAN_CHUNK_ROWS,
) -> CleanReport:
    """Republish every clean partition that this run's raw files feed (late data included);
    ``outlier_ratio`` judges competitor prices (see ``clean.cleaned_market_prices``),
    ``feedback`` says how feedback text is cut and redacted (``clean.cleaned_feedback``).
    Days are cleaned in slices of about ``chunk_rows`` raw rows, so memory stays bounded."""
    started = time.perf_counter()
    with wh.lock(f"source-{source}"):  # never beside another run's ingest or clean of it
        report = _clean_source(
            wh,
            source,
            cfg,
            run_date,
            tolerance_hours,
            outlier_ratio,
            feedback or FeedbackSettings(),
            chunk_rows,
        )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _clean_source(
    wh: Warehouse,
    source: str,
    cfg: SourceConfig,
    run_date: date,
    tolerance_hours: float,
    outlier_ratio: float,
    feedback: FeedbackSettings,
    chunk_rows: int,
) -> CleanReport:
    spec = clean.SPECS[source]
    contract = CONTRACTS[source]
    entries = Ledger(wh).entries(source)
    this_run = [e for e in entries if e.run_date == run_date.isoformat()]
    cutoff = clean.future_cutoff(run_date, tolerance_hours)
    snapshot = contract.partition_column is None
    if snapshot:  # the catalogue as it stood on the run date
        inputs = [e for e in entries if e.run_date <= run_date.isoformat()]
        affected = [run_date.isoformat()] if inputs else []
    else:
        # Every raw row known for the day, also from runs after this one: re-running an older
        # date must not drop the late events a later night brought for it.
        affected = sorted({d for e in this_run for d in e.dates})
        inputs = [e for e in entries if set(e.dates) & set(affected)]
    report = CleanReport(
        table=source, run_date=run_date.isoformat(), partitions={},
        rows_in=0, rows_out=0, duplicates=0, future=0, superseded=0, outliers=0,
    )  # fmt: skip
    if not affected:
        return report
    raw = raw_rows(wh, inputs)
    if source == "items":
        raw = clean.items_in_force(raw, run_date)
    if snapshot:
        slices: list[list[str]] = [affected]
    else:
        raw = raw.filter(clean.on_days(contract, affected))
        counts = _recorded_counts(inputs, affected, spec.id_column)
        if counts is None:  # an entry from before the ledger counted rows, or another id
            counts = clean.raw_counts(raw, spec)
        spec = clean.ids_given(spec, counts)
        slices = clean.day_slices(affected, counts.per_day, chunk_rows)
    # Duplicates are found over every affected day at once, so slicing changes no verdict.
    duplicates = clean.later_duplicates(raw, spec) if spec.keep == "first" else None
    refs = [e.ref for e in inputs]
    for days in slices:
        rows = raw if snapshot else raw.filter(clean.on_days(contract, days))
        if len(slices) > 1:
            log.info("%s: cleaning %s … %s (%d day(s))", source, days[0], days[-1], len(days))
        judged = _verdicts(spec, rows, cfg, cutoff, outlier_ratio, feedback, duplicates).collect()
        # Each day's rows are taken from the verdicts as its partition is written (a filter per
        # day, two days at a time): no copy of all the clean rows, and none split by day.
        good = clean.accepted_clean_rows(judged.lazy(), spec)
        bad = clean.rejected_clean_rows(judged.lazy(), spec).collect()
        report.rows_in += judged.height
        report.superseded += int(judged[clean.SUPERSEDED].sum())
        if snapshot:  # a small dimension table: ordered by its key, for people reading it
            good = good.sort(list(spec.key)).with_columns(pl.lit(run_date).alias("dt"))
            bad = bad.with_columns(pl.lit(run_date).alias("dt"))
        duplicated = bad.filter(pl.col("reason").str.starts_with("duplicate")).height
        outliers = bad.filter(pl.col("column") == "price").height
        report.duplicates += duplicated
        report.outliers += outliers
        report.future += bad.height - duplicated - outliers
        for day, (digest, rows_out) in _published(wh, source, days, good, bad, refs).items():
            report.rows_out += rows_out
            if digest is not None:
                report.partitions[day] = digest
        del judged, good, bad
    rejected = report.duplicates + report.future + report.outliers
    if report.rows_in != report.rows_out + rejected + report.superseded:
        raise AssertionError(f"clean {source}: row accounting is off: {report}")
    log.info(
        "%s: %d partition(s) republished, %d rows in → %d clean, %d duplicates, %d future, "
        "%d outliers, %d superseded",
        source, len(report.partitions), report.rows_in, report.rows_out, report.duplicates,
        report.future, report.outliers, report.superseded,
    )  # fmt: skip
    return report


def _recorded_counts(
    entries: list[LedgerEntry], days: list[str], id_column: str | None
) -> clean.RawCounts | None:
    """The raw rows per day of ``days`` and the rows without ``id_column``, from the ledger (None
    when an entry predates these counts or counted another id). Rows without an id are counted on
    every day of the entry: too many only means cleaning hashes rows it need not, never that it
    skips one it must."""
    wanted = set(days)
    counts = []
    for e in entries:
        if e.rows_by_date is None or e.rows_without_id is None or e.id_column != id_column:
            return None
        per_day = {d.dt: d.rows for d in e.rows_by_date if d.dt in wanted}
        counts.append(clean.RawCounts(per_day, e.rows_without_id))
    return clean.summed_counts(counts)


def _verdicts(
    spec: clean.CleanSpec,
    raw: pl.LazyFrame,
    cfg: SourceConfig,
    cutoff: datetime,
    outlier_ratio: float,
    feedback: FeedbackSettings,
    duplicates: pl.Series | None,
) -> pl.LazyFrame:
    if spec.table == "events":
        return clean.cleaned_events(raw, cfg.event_types, cutoff, duplicates, spec)
    if spec.table == "feedback":
        return clean.cleaned_feedback(
            raw, cutoff, feedback.max_text_chars, feedback.phone_region, duplicates, spec
        )
    if spec.table == "market_prices":
        return clean.cleaned_market_prices(raw, cutoff, outlier_ratio)
    return clean.cleaned_rows(raw, spec, cutoff, duplicates)


def _published(
    wh: Warehouse,
    source: str,
    days: list[str],
    good: pl.LazyFrame,
    bad: pl.DataFrame,
    refs: list[InputRef],
) -> dict[str, tuple[str | None, int]]:
    """Each day's clean partition (dropped when empty) and clean quarantine written: its content
    hash (None when dropped) and rows, by day."""
    bad_parts = dict(bad.partition_by("dt", as_dict=True, include_key=False, maintain_order=True))

    def publish(day_str: str) -> tuple[str | None, int]:
        day = date.fromisoformat(day_str)
        part = {"dt": day_str}
        rows = good.filter(pl.col("dt") == day).drop("dt").collect()
        rejected = bad_parts.get((day,))
        stats = {"rows": rows.height, "rejected": 0 if rejected is None else rejected.height}
        qtable = quarantine_table(source, "clean")
        if rejected is not None and rejected.height:
            wh.write_partition("quarantine", qtable, part, rejected, inputs=refs, stats=stats)
        else:
            wh.drop_partition("quarantine", qtable, part)
        if rows.height == 0:
            wh.drop_partition("clean", source, part)
            return None, 0
        written = wh.write_partition("clean", source, part, rows, inputs=refs, stats=stats)
        return written.content_hash, rows.height

    published = {}
    # Partitions are independent: write two at a time (Parquet encoding is mostly one thread).
    with ThreadPoolExecutor(max_workers=2) as pool:
        for day_str, outcome in zip(days, pool.map(publish, days), strict=True):
            check_time()
            published[day_str] = outcome
    return published


def raw_rows(wh: Warehouse, entries: list[LedgerEntry]) -> pl.LazyFrame:
    """Raw rows of the ledger entries with lineage: run date, the entry's place in ``entries``,
    landing file name, row number.

    A contract column added after a file was ingested reads as null for that file's rows."""

    def contract_columns(scan: pl.LazyFrame, source: str) -> list[pl.Expr]:
        present = scan.collect_schema()
        return [
            pl.col(c.name) if c.name in present else pl.lit(None, c.dtype).alias(c.name)
            for c in CONTRACTS[source].columns
        ]

    frames = []
    for place, e in enumerate(entries):
        if not all(os.path.exists(wh.root / f) for f in e.raw_files):
            continue
        scan = pl.scan_parquet([wh.root / f for f in e.raw_files])
        frames.append(
            scan.select(
                pl.lit(e.run_date).alias("_run"),
                pl.lit(place, pl.UInt32).alias(clean.ENTRY),
                pl.lit(e.name).alias("source_file"),
                pl.col(ingest.ROW).alias("source_row"),
                *contract_columns(scan, e.source),
            )
        )
    return pl.concat(frames, how="vertical_relaxed")


class ChecksFailed(Exception):
    """A blocking data check failed; the message names the check, the table and the numbers."""


def check_source(
    wh: Warehouse,
    source: str,
    run_date: date,
    ingested: IngestReport,
    checks_cfg: CheckSettings,
) -> list[checks.CheckResult]:
    """The data checks of one source's run: freshness, quarantine share, row count, nulls."""
    day = run_date.isoformat()

    def blocking(name: str) -> bool:
        return name not in checks_cfg.warn_only

    results = []
    if source in checks_cfg.fresh_sources:
        # The day's export may have been ingested by another night's run (a backfill running
        # dates side by side): look at every file named for the day, plus this run's undated ones.
        named = [e.name for e in Ledger(wh).entries(source)]
        dated = [d.isoformat() for n in named if (d := date_in_name(n)) and d.isoformat() == day]
        undated = [None for e in ingested.files if date_in_name(e.name) is None]
        results.append(checks.freshness(source, day, dated + undated, blocking("freshness")))
    results.append(
        checks.quarantine_share(
            source,
            ingested.rows_read,
            ingested.rows_quarantined,
            checks_cfg.max_quarantine_share,
            blocking("quarantine_share"),
            checks_cfg.quarantine_min_rows,
        )
    )
    manifests = wh.manifests("clean", source)
    today = next((m for m in manifests if m.partition["dt"] == day), None)
    history = [m.rows for m in manifests if m.partition["dt"] < day][
        -checks_cfg.row_count_history :
    ]
    results.append(
        checks.row_count(
            source,
            today.rows if today else 0,
            history,
            checks_cfg.row_count_tolerance,
            blocking("row_count"),
            checks_cfg.row_count_min_rows,
        )
    )
    if today is not None:
        required = CONTRACTS[source].required
        lf = wh.scan("clean", source, [today.partition])
        counts = lf.select(pl.len(), *(pl.col(c).null_count() for c in required)).collect().row(0)
        for column, nulls in zip(required, counts[1:], strict=True):
            results.append(
                checks.null_share(
                    source,
                    column,
                    nulls,
                    counts[0],
                    checks_cfg.max_null_share,
                    blocking("null_share"),
                )
            )
    return results
