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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from pydantic import BaseModel, Field

from nightowl.errors import NightowlError
from nightowl.schemas.config import (
    CLEAN_CHUNK_ROWS,
    FUTURE_HORIZON_DAYS,
    RAW_COMPRESSION,
    CheckSettings,
    FeedbackSettings,
    MarketSettings,
    RawCompression,
)
from nightowl.schemas.landing import CONTRACTS
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.common.deadline import check_time
from nightowl.tasks.ingest import checks, clean
from nightowl.tasks.ingest import contract as ingest
from nightowl.warehouse.catalog import listed
from nightowl.warehouse.crash import crash_point
from nightowl.warehouse.landing import (
    LandingError,
    LandingFile,
    date_in_name,
    landing_files,
    open_landing,
    reader_problem,
)
from nightowl.warehouse.ledger import (
    CleanBook,
    DateRows,
    DayBook,
    Ledger,
    LedgerEntry,
    live_deliveries,
    live_versions,
)
from nightowl.warehouse.manifest import combined_hash, file_sha256
from nightowl.warehouse.store import Warehouse, write_parquet
from nightowl.warehouse.tables import CLEAN, HELD, QUARANTINE, RAW

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

log = logging.getLogger("nightowl")
#: Rows per batch streamed through validation: bounded memory whatever the file size.
BATCH_ROWS = 500_000


class IngestFailed(NightowlError):
    """Some landing files could not be read; the others were ingested."""


class IngestReport(BaseModel):
    """What one source's ingest did for a run date."""

    source: str
    run_date: str
    files: list[LedgerEntry] = Field(description="files whose rows are in raw dt=run_date")
    newly_ingested: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="unchanged re-drops")
    notes: list[str] = Field(
        default_factory=list, description="corrections and copies, one line each, for people"
    )
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
    held: int = Field(default=0, description="early rows of the days cleaned, held for their day")
    held_total: int = Field(default=0, description="rows the held table has after this clean")
    held_days: list[str] = Field(default_factory=list, description="days that have held rows")
    seconds: float = 0.0


def quarantine_table(source: str, stage: str) -> str:
    """Quarantine table folder for a source and stage (ingest or clean)."""
    return QUARANTINE[(source, stage)].name


def held_table(source: str) -> str:
    """Held table folder for a source: its early rows, by the day they are dated."""
    return HELD[source].name


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
    """Ingest every new landing file of a source into raw, under the night it arrived (the
    high-water mark: tonight, for a backfill running beside tonight's run); fail if any is
    unreadable.
    Quarantined feedback has its personal data redacted (``phone_region``: see the settings);
    raw parts are compressed with ``raw_compression``.

    ``force`` reads again the files already ingested for this run date (their raw rows and
    quarantine are replaced); files ingested for other dates stay as they are.
    """
    started = time.perf_counter()
    with wh.lock(f"source-{source}"):  # runs for other dates may be ingesting this source
        report = _ingest_source(
            wh,
            source,
            cfg,
            run_date,
            config_dir,
            force=force,
            phone_region=phone_region,
            raw_compression=raw_compression,
        )
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
    # Files are seen as of the latest date ever run, whichever date this run is for: what has
    # arrived is the same for a rerun of an older date as for the latest night.
    arrived = wh.raise_high_water(part["dt"])
    report = IngestReport(source=source, run_date=part["dt"], files=[])
    failures: list[str] = []
    entries = ledger.entries(source)
    live = live_versions(entries)
    numbers = count(Ledger.next_seq(entries))  # delivery numbers, in the order of arrival
    # A file whose path, size and change time match its ledger entry is not read again to hash it
    # (the landing folder keeps every earlier night's files).
    seen = {(e.file, e.bytes, e.mtime_ns): e for e in entries}
    by_hash = {e.sha256: e for e in entries}
    visible = date.fromisoformat(arrived)
    found = landing_files(source, cfg, visible, wh.data_root, config_dir, include_waiting=True)
    for file in found:
        check_time()
        if file.waiting is not None:  # still being copied: a later run reads it
            report.notes.append(f"{source}: {file.name} {file.waiting}")
            continue
        if file.problem is not None:  # refused by name, not even hashed (a link out is not read)
            failures.append(f"{file.path}: {file.problem}")
            continue
        stat = file.path.stat()
        known = seen.get((str(file.path), stat.st_size, stat.st_mtime_ns))
        sha = known.sha256 if known else file_sha256(file.path)
        entry = by_hash.get(sha)
        current = live.get(file.name)
        if entry is not None and file.name not in entry.names:
            # The same content under another name: a copy, never ingested twice.
            entry.copies.append(file.name)
            if current is not None:  # the name had other content: this content is now its own
                entry.seq = next(numbers)
            ledger.record(entry)
            live[file.name] = entry
            report.notes.append(
                f"{source}: {file.name} has the same content as {entry.name}: skipped"
            )
            report.skipped.append(file.name)
            continue
        if entry is not None and current is not None and current.sha256 != entry.sha256:
            # An earlier version of the name is back: it supersedes the version after it.
            entry.seq = next(numbers)
            ledger.record(entry)
            live[file.name] = entry
            report.notes.append(
                f"{source}: {file.name} is back to its version of {entry.arrival_day}: it "
                f"supersedes the version of {current.arrival_day} ({current.rows_accepted} rows)"
            )
        if entry is not None and (entry.run_date != part["dt"] or not force):
            if entry.run_date == part["dt"]:
                report.files.append(entry)
            else:  # an earlier night's file, still in landing
                report.skipped.append(file.name)
            continue
        # A new file's raw rows go to the night it arrived (the high-water mark), whichever
        # date's run reads it first: a backfill beside tonight's run, or a rerun of an older
        # night, leaves tonight's files where tonight's run alone would have put them.
        home = date.fromisoformat(entry.run_date if entry is not None else arrived)
        try:
            new = ingest_file(
                wh,
                source,
                file,
                sha,
                cfg,
                home,
                stat=stat,
                phone_region=phone_region,
                raw_compression=raw_compression,
            )
        except (LandingError, ingest.MappingError) as exc:
            failures.append(str(exc) if isinstance(exc, LandingError) else f"{file.path}: {exc}")
            continue
        if entry is not None:  # read again (force): it keeps its place among the deliveries
            new.seq, new.arrived, new.copies = entry.seq, entry.arrived, entry.copies
        else:
            new.seq, new.arrived = next(numbers), arrived
            if current is not None:
                report.notes.append(
                    f"{source}: {file.name} changed since {current.arrival_day}: the new version "
                    f"supersedes it ({current.rows_accepted} rows)"
                )
        ledger.record(new)
        live[file.name] = by_hash[sha] = new
        report.newly_ingested.append(file.name)
        log.debug(
            "%s: %s → %d rows read, %d accepted, %d quarantined",
            source,
            file.name,
            new.rows_read,
            new.rows_accepted,
            new.rows_quarantined,
        )
        report.files.append(new)
    for night in sorted({part["dt"], *(e.run_date for e in report.files)}):
        night_part = {"dt": night}
        # Its inputs: every delivery whose rows it holds, whichever run read them.
        held_there = [e.ref for e in by_hash.values() if e.run_date == night]
        for table in (RAW[source], QUARANTINE[(source, "ingest")]):
            if wh.partition_dir(table.layer, table.name, night_part).exists():
                manifest = wh.seal_partition(table.layer, table.name, night_part, inputs=held_there)
                if table is RAW[source] and night_part == part:
                    report.content_hash = manifest.content_hash
    for note in report.notes:
        log.info("%s", note)
    log.info(
        "%s: %d new file(s), %d unchanged skipped, %d unreadable; %d rows read, %d quarantined",
        source,
        len(report.newly_ingested),
        len(report.skipped),
        len(failures),
        report.rows_read,
        report.rows_quarantined,
    )
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
            if file.format is None:  # never: open_landing refuses a file of no known format
                raise LandingError(file.path, file.problem or "cannot tell the format of the file")
            lf = opened.rows
            # The config's constants are values of every row too.
            nul = opened.nul_possible or any("\x00" in str(v) for v in cfg.constants.values())
            text = {"lossy_text": opened.lossy, "nul_possible": nul}
            if not lf.collect_schema().names():  # an empty JSON Lines file: zero rows, no columns
                unmapped = [c for c in contract.names if c not in cfg.columns.values()]
                lf = pl.LazyFrame(schema=dict.fromkeys([*cfg.columns, *unmapped], pl.String))
            plan = ingest.column_plan(lf.collect_schema().names(), contract, cfg)
            for line in plan.suggestions:
                log.warning("%s: %s: %s", source, file.name, line)
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
                problem = f"could not be read to the end ({reader_problem(exc, opened)})"
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
        raw = RAW[source]
        for leftover in wh.partition_dir(raw.layer, raw.name, part).glob(f"{stem}-*.parquet"):
            leftover.unlink()
        raw_paths = [wh.add_file(raw.layer, raw.name, part, p.name, p) for p in parts]
        if rejected:
            bad = staging / f"{stem}.parquet"
            rows = pl.concat(rejected)
            if source == "feedback":  # the raw text stays in raw/ alone, not in quarantine too
                rows = rows.with_columns(
                    clean.redacted_values(pl.col(c), phone_region).alias(c)
                    for c in ("raw_value", "record")
                )
            write_parquet(rows, bad)
            rejects = QUARANTINE[(source, "ingest")]
            wh.add_file(rejects.layer, rejects.name, part, bad.name, bad)
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
        column_warnings=plan.suggestions,
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
    horizon_days: int = FUTURE_HORIZON_DAYS,
) -> CleanReport:
    """Republish every clean partition that this run's raw files feed (late data included), and
    every day whose deliveries or status changed since it was last cleaned (corrections, held
    days come due, days whose clean never ran). Rows dated after the latest run date plus
    ``tolerance_hours`` are held, up to ``horizon_days`` later; later still, quarantined.
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
            horizon_days,
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
    horizon_days: int,
) -> CleanReport:
    spec = clean.SPECS[source]
    contract = CONTRACTS[source]
    entries = Ledger(wh).entries(source)
    live = live_deliveries(entries)
    # The clean layer is a function of the deliveries and the latest date ever run, never of
    # which date this run is for: a rerun of an older night holds and releases as the latest did.
    high = date.fromisoformat(max(run_date.isoformat(), wh.high_water() or ""))
    cutoff = clean.future_cutoff(high, tolerance_hours)
    horizon = cutoff + timedelta(days=horizon_days)
    book = CleanBook.load(wh, source)
    rules = combined_hash(
        [wh.code_version, cfg.model_dump_json(), str(tolerance_hours), str(horizon_days)]
        + ([str(outlier_ratio)] if source == "market_prices" else [])
        + ([feedback.model_dump_json()] if source == "feedback" else [])
    )
    snapshot = contract.partition_column is None
    feeding = _feeding(live, book, run_date.isoformat(), snapshot)
    signatures = {
        day: combined_hash(
            [rules, "snapshot" if snapshot else _day_status(day, cutoff, horizon)]
            + [f"{e.sha256}:{e.seq}" for e in found]
        )
        for day, found in feeding.items()
    }
    this_run = (
        {run_date.isoformat()}
        if snapshot
        else {d for e in entries if e.run_date == run_date.isoformat() for d in e.dates}
    )
    # This run's days, and every day whose deliveries or status changed since its last clean:
    # a correction, a late file, a held day that came due, a night whose clean never happened.
    todo = sorted(d for d in feeding if d in this_run or book.signature(d) != signatures[d])
    report = CleanReport(
        table=source,
        run_date=run_date.isoformat(),
        partitions={},
        rows_in=0,
        rows_out=0,
        duplicates=0,
        future=0,
        superseded=0,
        outliers=0,
    )
    caught_up = sorted(d for d in todo if d not in this_run)
    if caught_up and not snapshot:
        log.info(
            "%s: also cleaning %d day(s) whose deliveries or status changed: %s",
            source,
            len(caught_up),
            listed(caught_up),
        )
    verdicts = (
        _snapshot_verdicts(wh, spec, todo, feeding, cutoff)
        if snapshot
        else _dated_verdicts(
            wh, spec, cfg, todo, feeding, cutoff, horizon, outlier_ratio, feedback, chunk_rows
        )
    )
    for days, judged, refs in verdicts:
        check_time()
        good = clean.accepted_clean_rows(judged.lazy(), spec)
        if snapshot:  # a small dimension table: ordered by its key, for people reading it
            good = good.sort(list(spec.key))
        bad = clean.rejected_clean_rows(judged.lazy(), spec).collect()
        held = clean.held_rows(judged.lazy(), spec, tolerance_hours).collect()
        report.rows_in += judged.height
        report.superseded += int(judged[clean.SUPERSEDED].sum())
        duplicated = bad.filter(pl.col("reason").str.starts_with("duplicate")).height
        outliers = bad.filter(pl.col("column") == "price").height
        report.duplicates += duplicated
        report.outliers += outliers
        report.future += bad.height - duplicated - outliers
        report.held += held.height
        for day, (digest, rows_out) in _published(wh, source, days, good, bad, held, refs).items():
            report.rows_out += rows_out
            if digest is not None:
                report.partitions[day] = digest
        counted = _delivery_counts(judged, refs)
        for day in days:
            book.days[day] = DayBook(signature=signatures[day], counts=counted.get(day, {}))
        del judged, good, bad, held
    for day in [d for d, b in book.days.items() if not feeding.get(d) and not b.counts]:
        del book.days[day]  # nothing feeds it any more, and its partitions are gone
    book.save(wh)
    _record_deliveries(wh, source, entries, live, book, snapshot)
    rejected = report.duplicates + report.future + report.outliers
    if report.rows_in != report.rows_out + rejected + report.superseded + report.held:
        raise AssertionError(f"clean {source}: row accounting is off: {report}")
    waiting = {d: sum(c["held"] for c in b.counts.values()) for d, b in book.days.items()}
    report.held_days = sorted(d for d, n in waiting.items() if n)
    report.held_total = sum(waiting.values())
    log.info(
        "%s: %d partition(s) republished, %d rows in → %d clean, %d held, %d duplicates, "
        "%d too far in the future, %d outliers, %d superseded",
        source,
        len(report.partitions),
        report.rows_in,
        report.rows_out,
        report.held,
        report.duplicates,
        report.future,
        report.outliers,
        report.superseded,
    )
    if report.held_total:
        log.info(
            "%s: held %d rows (days %s) until their day is run",
            source,
            report.held_total,
            listed(report.held_days),
        )
    return report


def _feeding(
    live: list[LedgerEntry], book: CleanBook, run_date: str, snapshot: bool
) -> dict[str, list[LedgerEntry]]:
    """Every day a clean may publish (those with rows, and those it published before), with the
    live deliveries holding rows for it in delivery order; for a snapshot source, every
    snapshot date (this run's, and those published before) with the deliveries in force on it."""
    if snapshot:
        days = sorted({*book.days, run_date})
        return {day: [e for e in live if _in_force_from(e) <= day] for day in days}
    feeding: dict[str, list[LedgerEntry]] = {day: [] for day in book.days}
    for e in live:
        for day in e.dates:
            feeding.setdefault(day, []).append(e)
    return feeding


def _in_force_from(entry: LedgerEntry) -> str:
    """The first date a snapshot delivery describes: the date in its name, else its arrival."""
    named = date_in_name(entry.name)
    return named.isoformat() if named else entry.arrival_day


def _day_status(day: str, cutoff: datetime, horizon: datetime) -> str:
    """Where a day stands against the cutoff and the horizon (part of its signature): the
    instants of both, clamped to the day, so that only a change that can move its rows changes
    it. A row at midnight is after a cutoff a microsecond earlier, not after one at midnight."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    low, high = start - timedelta(microseconds=1), start + timedelta(days=1)
    return "|".join(min(max(t, low), high).isoformat() for t in (cutoff, horizon))


Verdicts = Iterator[tuple[list[str], pl.DataFrame, list[LedgerEntry]]]


def _dated_verdicts(
    wh: Warehouse,
    spec: clean.CleanSpec,
    cfg: SourceConfig,
    todo: list[str],
    feeding: dict[str, list[LedgerEntry]],
    cutoff: datetime,
    horizon: datetime,
    outlier_ratio: float,
    feedback: FeedbackSettings,
    chunk_rows: int,
) -> Verdicts:
    """The judged rows of the days to clean, a slice of days at a time (bounded memory)."""
    if not todo:
        return
    contract = CONTRACTS[spec.table]
    found = {e.sha256: e for day in todo for e in feeding[day]}
    inputs = sorted(found.values(), key=lambda e: e.seq or 0)  # delivery order: arrival order
    raw = raw_rows(wh, inputs, spec.table).filter(clean.on_days(contract, todo))
    counts = _recorded_counts(inputs, todo, spec.id_column)
    if counts is None:  # an entry from before the ledger counted rows, or another id
        counts = clean.raw_counts(raw, spec)
    spec = clean.ids_given(spec, counts)
    slices = clean.day_slices(todo, counts.per_day, chunk_rows)
    # Duplicates are found over every day at once (among the rows not held), so slicing
    # changes no verdict.
    held = clean.after(contract, cutoff) & clean.after(contract, horizon).not_()
    duplicates = (
        clean.later_duplicates(raw.filter(held.not_()), spec) if spec.keep == "first" else None
    )
    for days in slices:
        rows = raw.filter(clean.on_days(contract, days))
        if len(slices) > 1:
            log.info("%s: cleaning %s … %s (%d day(s))", spec.table, days[0], days[-1], len(days))
        judged = _verdicts(
            spec, rows, cfg, cutoff, horizon, outlier_ratio, feedback, duplicates
        ).collect()
        yield days, judged, inputs
        del judged  # before the next slice is judged: one slice in memory at a time


def _snapshot_verdicts(
    wh: Warehouse,
    spec: clean.CleanSpec,
    todo: list[str],
    feeding: dict[str, list[LedgerEntry]],
    cutoff: datetime,
) -> Verdicts:
    """The judged rows of each snapshot date to clean: the catalogue in force on it."""
    for day in todo:
        inputs = feeding[day]
        raw = clean.items_in_force(raw_rows(wh, inputs, spec.table), date.fromisoformat(day))
        judged = clean.cleaned_rows(raw, spec, cutoff).with_columns(
            pl.lit(date.fromisoformat(day)).alias("dt")
        )
        yield [day], judged.collect(), inputs


def _delivery_counts(
    judged: pl.DataFrame, inputs: list[LedgerEntry]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per day, per delivery (sha256): its rows clean, held, quarantined, duplicated, superseded."""
    reason, superseded, held = pl.col(clean.REASON), pl.col(clean.SUPERSEDED), pl.col(clean.HELD)
    keys = ["dt", clean.ENTRY]
    totals = judged.group_by(keys).agg(
        pl.len().alias("rows"), held.sum().alias("held"), superseded.sum().alias("superseded")
    )
    # Reasons are few: only the rejected rows are looked at as text.
    duplicate = reason.str.starts_with("duplicate")
    rejected = (
        judged.filter(reason.is_not_null() & superseded.not_() & held.not_())
        .group_by(keys)
        .agg(duplicate.sum().alias("duplicates"), duplicate.not_().sum().alias("quarantined"))
    )
    counts = totals.join(rejected, on=keys, how="left").fill_null(0)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in counts.iter_rows(named=True):
        sha = inputs[row[clean.ENTRY]].sha256
        kinds = {k: int(row[k]) for k in ("held", "quarantined", "duplicates", "superseded")}
        kinds["clean"] = int(row["rows"]) - sum(kinds.values())
        out.setdefault(row["dt"].isoformat(), {})[sha] = kinds
    return out


#: What clean makes of a delivery's accepted rows, as a day book counts them.
DELIVERY_COUNTS = ("clean", "held", "quarantined", "duplicates", "superseded")
#: ``ingest_ledger``'s accounting columns: rows_accepted is the sum of the others.
ACCOUNTING_COLUMNS = {
    "rows_accepted": "accepted",
    "rows_clean": "clean",
    "rows_held": "held",
    "rows_quarantined_clean": "quarantined",
    "rows_duplicates": "duplicates",
    "rows_superseded": "superseded",
}


def delivery_accounting(
    entries: list[LedgerEntry], live: list[LedgerEntry], book: CleanBook, snapshot: bool
) -> pl.DataFrame:
    """One row per delivery: whether it is live, and what became of its accepted rows
    (``rows_clean`` + ``rows_held`` + ``rows_quarantined_clean`` + ``rows_duplicates`` +
    ``rows_superseded`` = ``rows_accepted``)."""
    alive = {e.sha256 for e in live}
    totals = {e.sha256: dict.fromkeys(DELIVERY_COUNTS, 0) for e in entries}
    days = sorted(book.days)
    if snapshot:  # what the latest snapshot made of each delivery; later plans are held
        days = days[-1:]
        for e in live:
            if days and _in_force_from(e) > days[0]:
                totals[e.sha256]["held"] = e.rows_accepted
    for day in days:
        for sha, counts in book.days[day].counts.items():
            for kind, n in counts.items():
                totals.setdefault(sha, dict.fromkeys(DELIVERY_COUNTS, 0))[kind] += n
    for e in entries:
        totals[e.sha256]["accepted"] = e.rows_accepted
        if e.sha256 not in alive:  # a replaced version: every row it had is superseded
            totals[e.sha256] = dict.fromkeys(DELIVERY_COUNTS, 0) | {
                "superseded": e.rows_accepted,
                "accepted": e.rows_accepted,
            }
    return pl.DataFrame(
        {
            "source": [e.source for e in entries],
            "sha256": [e.sha256 for e in entries],
            "name": [e.name for e in entries],
            "seq": [e.seq for e in entries],
            "live": [e.sha256 in alive for e in entries],
            **{
                column: [totals[e.sha256][kind] for e in entries]
                for column, kind in ACCOUNTING_COLUMNS.items()
            },
        },
        schema_overrides={"seq": pl.Int64}
        | dict.fromkeys(ACCOUNTING_COLUMNS, pl.Int64)
        | {"source": pl.String, "sha256": pl.String, "name": pl.String},
    )


def _record_deliveries(
    wh: Warehouse,
    source: str,
    entries: list[LedgerEntry],
    live: list[LedgerEntry],
    book: CleanBook,
    snapshot: bool,
) -> None:
    accounting = delivery_accounting(entries, live, book, snapshot)
    parts = [c for c in ACCOUNTING_COLUMNS if c != "rows_accepted"]
    off = accounting.filter(pl.col("rows_accepted") != pl.sum_horizontal(parts))
    if not snapshot and off.height:
        log.warning(
            "%s: %d deliveries do not reconcile (rows accepted at ingest vs what clean made of "
            "them): %s",
            source,
            off.height,
            ", ".join(off["name"].head(5)),
        )
    wh.write_accounting(source, accounting)


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
    horizon: datetime,
    outlier_ratio: float,
    feedback: FeedbackSettings,
    duplicates: pl.Series | None,
) -> pl.LazyFrame:
    if spec.table == "events":
        return clean.cleaned_events(raw, cfg.event_types, cutoff, duplicates, spec, horizon)
    if spec.table == "feedback":
        return clean.cleaned_feedback(
            raw,
            cutoff,
            feedback.max_text_chars,
            feedback.phone_region,
            duplicates,
            spec,
            horizon,
        )
    if spec.table == "market_prices":
        return clean.cleaned_market_prices(raw, cutoff, outlier_ratio, horizon)
    return clean.cleaned_rows(raw, spec, cutoff, duplicates, horizon)


def _published(
    wh: Warehouse,
    source: str,
    days: list[str],
    good: pl.LazyFrame,
    bad: pl.DataFrame,
    held: pl.DataFrame,
    entries: list[LedgerEntry],
) -> dict[str, tuple[str | None, int]]:
    """Each day's clean partition, clean quarantine and held rows written (each dropped when
    empty): the clean partition's content hash (None when dropped) and rows, by day."""
    refs = [e.ref for e in entries]
    rejects, waiting, cleaned = QUARANTINE[(source, "clean")], HELD[source], CLEAN[source]
    bad_parts = dict(bad.partition_by("dt", as_dict=True, include_key=False, maintain_order=True))
    held_parts = dict(held.partition_by("dt", as_dict=True, include_key=False, maintain_order=True))

    def publish(day_str: str) -> tuple[str | None, int]:
        day = date.fromisoformat(day_str)
        part = {"dt": day_str}
        rows = good.filter(pl.col("dt") == day).drop("dt").collect()
        rejected = bad_parts.get((day,))
        stats = {"rows": rows.height, "rejected": 0 if rejected is None else rejected.height}
        if rejected is not None and rejected.height:
            wh.write_partition(
                rejects.layer, rejects.name, part, rejected, inputs=refs, stats=stats
            )
        else:
            wh.drop_partition(rejects.layer, rejects.name, part)
        early = held_parts.get((day,))
        if early is not None and early.height:
            wh.write_partition(waiting.layer, waiting.name, part, early, inputs=refs)
        else:
            wh.drop_partition(waiting.layer, waiting.name, part)
        if rows.height == 0:
            wh.drop_partition(cleaned.layer, cleaned.name, part)
            return None, 0
        written = wh.write_partition(
            cleaned.layer, cleaned.name, part, rows, inputs=refs, stats=stats
        )
        return written.content_hash, rows.height

    published = {}
    # Partitions are independent: write two at a time (Parquet encoding is mostly one thread).
    with ThreadPoolExecutor(max_workers=2) as pool:
        for day_str, outcome in zip(days, pool.map(publish, days), strict=True):
            check_time()
            published[day_str] = outcome
    return published


def raw_rows(wh: Warehouse, entries: list[LedgerEntry], source: str | None = None) -> pl.LazyFrame:
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
        scan = pl.scan_parquet([wh.root / f for f in e.raw_files], glob=False)
        frames.append(
            scan.select(
                pl.lit(e.arrival_day).alias("_run"),
                pl.lit(place, pl.UInt32).alias(clean.ENTRY),
                pl.lit(e.name).alias("source_file"),
                pl.col(ingest.ROW).alias("source_row"),
                *contract_columns(scan, e.source),
            )
        )
    if not frames:  # nothing feeds the days any more (their deliveries were superseded)
        lineage: dict[str, PolarsDataType] = {
            "_run": pl.String,
            clean.ENTRY: pl.UInt32,
            "source_file": pl.String,
        }
        source = source or (entries[0].source if entries else None)
        columns: dict[str, PolarsDataType] = (
            {c.name: c.dtype for c in CONTRACTS[source].columns} if source else {}
        )
        return pl.LazyFrame(schema=lineage | {"source_row": pl.Int64} | columns)
    return pl.concat(frames, how="vertical_relaxed")


class ChecksFailed(NightowlError):
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
    # The day's export may have been ingested by another night's run (a backfill running dates
    # side by side): look at every file named for the day, plus this run's undated ones.
    named = [e.name for e in Ledger(wh).entries(source)]
    dates = [d for n in named if (d := date_in_name(n)) and d <= run_date]
    # A source delivered weekly is fresh all week, and has no rows between deliveries: the
    # checks follow its cadence.
    cadence = checks_cfg.cadence_days.get(source) or checks.delivery_cadence(dates)
    if source in checks_cfg.fresh_sources:
        dated: list[str | None] = [d.isoformat() for d in dates]
        dated += [None for e in ingested.files if date_in_name(e.name) is None]
        results.append(checks.freshness(source, day, dated, blocking("freshness"), cadence))
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
    cleaned = CLEAN[source]
    manifests = wh.manifests(cleaned.layer, cleaned.name)
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
            cadence,
        )
    )
    if today is not None:
        required = CONTRACTS[source].required
        lf = wh.scan_published(cleaned.layer, cleaned.name, [today.partition])
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
