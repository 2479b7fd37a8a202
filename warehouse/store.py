"""The Parquet warehouse: layered, Hive-partitioned tables published atomically with manifests.

Layout under ``<data_root>/warehouse``::

    raw/<source>/dt=<run date>/<file hash>.parquet       one file per ingested landing file
    quarantine/source=<s>/stage=<ingest|clean>/dt=<d>/   rejected rows with a reason
    clean/<table>/dt=<date>/part-<sha>.parquet           cleaned rows by their own date
    held/source=<s>/dt=<date>/                           early rows waiting for their day
    _ledger/<source>/<sha256>.json                       the ingest ledger, one entry per delivery
    _accounting/high_water.json                          the latest run date ever run
    _accounting/<source>/days.json, deliveries.parquet   what clean made of each day and delivery

Every table is declared in tables.py (columns, dtypes, partition key): a write that does not
match its declaration, or names a table not declared, is refused before anything is written.

Every partition folder carries ``_manifest.json``. Writers build a partition in ``warehouse/.tmp``
(same file system) and swap it in with one rename, so a table folder only ever holds published
partitions: readers (who glob ``<table>/*/*.parquet``) see the old or the new partition, never half
of one, and a crash leaves nothing that looks finished. A partition's file is named after its
content, so a reader that listed the old files just before a swap finds them gone (and reads
again) rather than opening a new file of the same name with the old one's row offsets.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import quote

import polars as pl

from nightowl.warehouse.crash import crash_point
from nightowl.warehouse.manifest import (
    MANIFEST,
    FileEntry,
    InputRef,
    Manifest,
    combined_hash,
    file_sha256,
)
from nightowl.warehouse.tables import LAYERS
from nightowl.warehouse.tables import table as declared_table

if TYPE_CHECKING:
    from polars._typing import ParquetCompression

TMP_PREFIX = ".tmp-"
#: Where `nightowl server` serves the pages root, read-only: ``/reports/<run date>/index.html``.
PAGES_URL_PATH = "/reports/"


class ParquetOptions(TypedDict):
    """The keywords of every Parquet write (``DataFrame.write_parquet``)."""

    compression: ParquetCompression
    statistics: bool


PARQUET_OPTIONS: ParquetOptions = {"compression": "snappy", "statistics": True}
#: A Parquet write that fails with less than this left free beside it failed for a full disk.
FULL_DISK_BYTES = 1 << 20


def partition_name(partition: dict[str, str]) -> str:
    """Hive path fragment for a partition, e.g. ``dt=2026-11-27``.

    Keys and values may come from input data (a source name, a date): one that could leave the
    table's folder or hide in it (a separator, ``..``, a leading dot) is refused, not written."""
    for part in (str(x) for kv in partition.items() for x in kv):
        _plain_name(part, f"a partition key or value (in {partition})", "/\\=\0")
    return "/".join(f"{k}={v}" for k, v in partition.items())


def _plain_name(name: str, what: str, forbidden: str = "/") -> None:
    """Refuse a name that could leave its folder or hide in it: empty, a leading dot, or holding
    one of ``forbidden``."""
    if not name or name.startswith(".") or any(c in name for c in forbidden):
        raise ValueError(f"not {what}: {name!r}")


def page_url_path(page: str | Path) -> str:
    """The URL path `nightowl server` serves a published report file at (a page is
    ``<pages root>/<name>/<file>``): ``/reports/2026-11-20/index.html``."""
    path = Path(page)
    return f"{PAGES_URL_PATH}{quote(path.parent.name)}/{quote(path.name)}"


def write_parquet(
    frame: pl.DataFrame, path: Path, compression: ParquetCompression | None = None
) -> None:
    """Write ``frame`` as one Parquet file (``compression``: default snappy), saying "No space
    left on device" when that is why it failed: Polars reports a full disk as a broken stream
    ("Invalid thrift: transport error")."""
    options = PARQUET_OPTIONS | ({"compression": compression} if compression else {})
    try:
        frame.write_parquet(path, **options)
    except pl.exceptions.PolarsError as exc:
        free = shutil.disk_usage(path.parent).free
        if free < FULL_DISK_BYTES:
            message = f"No space left on device ({human_bytes(free)} free; Polars: {exc})"
            raise OSError(errno.ENOSPC, message, str(path)) from exc
        raise


#: Object-store mounts whose rename is a copy then a delete (or is refused), found in a mount's
#: type or source: atomic publish cannot work on them.
COPYING_RENAME = ("s3fs", "goofys", "mountpoint-s3", "gcsfuse", "rclone", "blobfuse")


def _mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:  # not Linux: nothing known about the mounts
        return ""


def file_system_of(path: Path, mountinfo: str) -> tuple[str, str]:
    """(type, source) of the mount that holds ``path``, from the text of /proc/self/mountinfo
    (("", "") when it says nothing about it)."""
    path = Path(os.path.realpath(path))
    best, found = -1, ("", "")
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, rest = fields.split(), tail.split()
        if len(parts) < 5 or len(rest) < 2:
            continue
        point = Path(parts[4].replace("\\040", " ").replace("\\011", "\t"))
        depth = len(point.parts)
        if depth >= best and (path == point or point in path.parents):
            best, found = depth, (rest[0], rest[1])
    return found


def human_bytes(n: float) -> str:
    """``n`` bytes the way a person reads them: 512 B, 3 MB, 1.2 TB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class Warehouse:
    """All storage: where tables live and how partitions are written, read and listed."""

    def __init__(self, data_root: Path, code_version: str = "dev") -> None:
        self.data_root = Path(data_root).absolute()
        self.root = self.data_root / "warehouse"
        self.code_version = code_version

    # ---- places -----------------------------------------------------------------------------
    @property
    def landing_root(self) -> Path:
        return self.data_root / "landing"

    @property
    def state_dir(self) -> Path:
        """Where orchestration state (Prefect results, its home) lives, beside the warehouse."""
        return self.data_root / "_state"

    @property
    def tmp_dir(self) -> Path:
        path = self.root / ".tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def table_dir(self, layer: str, table: str) -> Path:
        return self.root / layer / table

    def partition_dir(self, layer: str, table: str, partition: dict[str, str]) -> Path:
        return self.table_dir(layer, table) / partition_name(partition)

    def ledger_dir(self, source: str) -> Path:
        return self.root / "_ledger" / source

    def accounting_dir(self, source: str | None = None) -> Path:
        """Where the deliveries' accounting lives (the high-water mark; a source's clean days)."""
        base = self.root / "_accounting"
        return base / source if source else base

    def high_water(self) -> str | None:
        """The latest run date ever run on this warehouse (ISO), or None before the first run."""
        try:
            return json.loads((self.accounting_dir() / "high_water.json").read_text())["date"]
        except FileNotFoundError:
            return None

    def write_accounting(self, source: str, deliveries: pl.DataFrame) -> None:
        """Publish what became of each delivery of a source (``ingest_ledger`` joins it)."""
        folder = self.accounting_dir(source)
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f"{TMP_PREFIX}deliveries-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet(deliveries, staged)
        os.replace(staged, folder / "deliveries.parquet")

    def raise_high_water(self, run_date: str) -> str:
        """Make ``run_date`` the high-water mark if it is later than the one recorded; the mark
        after it. Runs of older dates leave it where it is: it only moves forward."""
        with self.lock("high-water"):
            current = self.high_water()
            if current is not None and current >= run_date:
                return current
            folder = self.accounting_dir()
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "high_water.json", json.dumps({"date": run_date}))
            return run_date

    @property
    def pages_root(self) -> Path:
        """Where the readable reports live: ``<data_root>/reports/<run date>/index.html``."""
        return self.data_root / "reports"

    def storage_problem(self, min_free_bytes: int) -> str | None:
        """Why a run could not write under the data root, in one sentence (None: it can).

        Asked before a run starts, so a read-only data root or a full disk stops it at once with
        this sentence, instead of failing inside a step (or inside Prefect's database, which
        lives here too)."""
        existing = self.data_root
        while not existing.exists():
            existing = existing.parent
        written = [self.data_root, self.root, self.state_dir, self.pages_root]
        for folder in [f for f in written if f.is_dir()] or [existing]:
            try:
                with tempfile.NamedTemporaryFile(prefix=".nightowl-probe-", dir=folder):
                    pass
            except OSError as exc:
                return (
                    f"cannot write to {folder}: {(exc.strerror or str(exc)).lower()} (running as "
                    f"uid {os.geteuid()}); give this user write access to the data root, "
                    "or choose another with --data-root"
                )
        kind, source = file_system_of(existing, _mountinfo())
        if any(name in f"{kind} {source}" for name in COPYING_RENAME):
            return (
                f"{self.data_root} is on {source} ({kind}), an object-store mount whose rename "
                "copies and deletes: a partition could be read half-published there, and a crash "
                "could leave it so; put the data root on a file system with atomic rename (a local "
                "disk, NFS, or JuiceFS over the object store: see the README)"
            )
        free = shutil.disk_usage(existing).free
        if free < min_free_bytes:
            return (
                f"only {human_bytes(free)} free on the disk of {self.data_root} (a run needs "
                f"{human_bytes(min_free_bytes)}: [run] min_free_mb); free some space, "
                "or choose another data root with --data-root"
            )
        return None

    def page_dir(self, name: str) -> Path:
        _plain_name(name, "a report folder name")
        return self.pages_root / name

    # ---- writing ----------------------------------------------------------------------------
    def write_partition(
        self,
        layer: str,
        table: str,
        partition: dict[str, str],
        frame: pl.DataFrame,
        *,
        inputs: list[InputRef] | None = None,
        stats: dict | None = None,
    ) -> Manifest:
        """Publish ``frame`` as the whole partition, replacing what was there in one rename.

        The frame must be the table's as warehouse/tables.py declares it (columns, dtypes, order,
        partition key), and the table must be declared there: otherwise ``TableContractError``,
        before anything is written. Only the schema is compared, no data is read."""
        partition_name(partition)  # a key or value that could leave the table: refused first
        declared_table(layer, table).check(frame.schema, partition)
        with self._publishing(self.partition_dir(layer, table, partition)) as staging:
            written = staging / "part.parquet"
            write_parquet(frame, written)
            crash_point("partition-staged", f"{layer}/{table}/{partition_name(partition)}")
            sha = file_sha256(written)
            entry = FileEntry(
                name=f"part-{sha[:16]}.parquet",
                rows=frame.height,
                bytes=written.stat().st_size,
                sha256=sha,
            )
            written.rename(staging / entry.name)
            manifest = self._manifest_for(
                staging,
                layer,
                table,
                partition,
                frame.schema,
                inputs,
                stats,
                known={entry.name: entry},
            )
            final = self.partition_dir(layer, table, partition) / MANIFEST
            write_json_atomic(
                staging / MANIFEST, manifest.model_dump_json(indent=2), where=str(final)
            )
        return manifest

    @contextlib.contextmanager
    def _publishing(self, target: Path) -> Iterator[Path]:
        """A staging folder to fill; on success it replaces ``target`` in one rename."""
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = self.tmp_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        where = str(target.relative_to(self.data_root))
        try:
            yield staging
            crash_point("publish-staged", where)
            _swap_in(staging, target)
            crash_point("publish-swapped", where)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def add_file(
        self, layer: str, table: str, partition: dict[str, str], name: str, staged: Path
    ) -> Path:
        """Move a finished file into a partition that accumulates files (one rename, atomic).

        The file must hold the table's columns as warehouse/tables.py declares them (its
        Parquet footer is read, not its rows): otherwise ``TableContractError``."""
        partition_name(partition)
        declared_table(layer, table).check(pl.read_parquet_schema(staged), partition)
        folder = self.partition_dir(layer, table, partition)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / name
        os.replace(staged, final)
        crash_point("file-added", str(final.relative_to(self.root)))
        return final

    def publish_page(self, name: str, files: dict[str, bytes]) -> Path:
        """Publish a report folder (``index.html`` and its downloads) in one rename, replacing
        the old one: a reader opens the old page or the new, never half of one."""
        target = self.page_dir(name)
        with self._publishing(target) as staging:
            for file, content in files.items():
                _plain_name(file, "a file name")
                (staging / file).write_bytes(content)
        return target

    def seal_partition(
        self,
        layer: str,
        table: str,
        partition: dict[str, str],
        *,
        inputs: list[InputRef] | None = None,
    ) -> Manifest:
        """(Re)write the manifest of an accumulating partition from the files it now holds."""
        folder = self.partition_dir(layer, table, partition)
        folder.mkdir(parents=True, exist_ok=True)
        old = self.manifest(layer, table, partition)
        known = {f.name: f for f in old.files} if old else {}
        files = sorted(folder.glob("*.parquet"))
        schema = pl.scan_parquet(files[0], glob=False).collect_schema() if files else pl.Schema()
        manifest = self._manifest_for(
            folder, layer, table, partition, schema, inputs, None, known=known
        )
        write_json_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
        return manifest

    def _manifest_for(
        self,
        folder: Path,
        layer: str,
        table: str,
        partition: dict[str, str],
        schema: pl.Schema | dict,
        inputs: list[InputRef] | None,
        stats: dict | None,
        known: dict[str, FileEntry] | None = None,
    ) -> Manifest:
        def entry(path: Path) -> FileEntry:
            size = path.stat().st_size
            old = (known or {}).get(path.name)
            if old is not None and old.bytes == size:
                return old
            rows = pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()
            return FileEntry(name=path.name, rows=rows, bytes=size, sha256=file_sha256(path))

        # Hashing is one core's work a file (hashlib lets go of the GIL): a night's raw parts
        # are hashed two at a time.
        with ThreadPoolExecutor(max_workers=2) as pool:
            entries = list(pool.map(entry, sorted(folder.glob("*.parquet"))))
        return Manifest(
            layer=layer,
            table=table,
            partition=partition,
            rows=sum(e.rows for e in entries),
            bytes=sum(e.bytes for e in entries),
            files=entries,
            content_hash=combined_hash([e.sha256 for e in entries]),
            columns={name: str(dtype) for name, dtype in dict(schema).items()},
            code_version=self.code_version,
            inputs=inputs or [],
            stats=stats or {},
        )

    def drop_partition(self, layer: str, table: str, partition: dict[str, str]) -> None:
        """Remove a partition (used when a republish finds it has no rows left)."""
        target = self.partition_dir(layer, table, partition)
        if target.exists():
            graveyard = self.tmp_dir / f"{TMP_PREFIX}drop-{uuid.uuid4().hex}"
            target.rename(graveyard)
            shutil.rmtree(graveyard, ignore_errors=True)

    def sweep_temporaries(self, older_than_s: float = 3600) -> int:
        """Delete what crashed writers left in the staging folder long ago; returns how many.

        Only old entries go, so a writer working right now is never disturbed.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in list(self.tmp_dir.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                if path.lstat().st_mtime < cutoff:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                    removed += 1
        return removed

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold an exclusive lock (a flock'd file): two processes never write one thing at once."""
        folder = self.state_dir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{name}.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def record_run(self, run_date: str, summary: dict) -> None:
        """Mark the nightly run for ``run_date`` complete, with what it did."""
        folder = self.state_dir / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        record = {"run_date": run_date, "code_version": self.code_version, "summary": summary}
        write_json_atomic(folder / f"{run_date}.json", json.dumps(record, indent=2, default=str))

    def completed_run(self, run_date: str) -> dict | None:
        """The record of the completed nightly run for ``run_date``, if there is one."""
        try:
            return json.loads((self.state_dir / "runs" / f"{run_date}.json").read_text())
        except FileNotFoundError:
            return None

    # ---- reading ----------------------------------------------------------------------------
    def manifest(self, layer: str, table: str, partition: dict[str, str]) -> Manifest | None:
        return _read_manifest(self.partition_dir(layer, table, partition) / MANIFEST)

    def manifests(self, layer: str, table: str) -> list[Manifest]:
        """Manifests of every published partition of a table, in partition order."""
        return [m for p in self.partition_dirs(layer, table) if (m := _read_manifest(p))]

    def partition_dirs(self, layer: str, table: str) -> list[Path]:
        base = self.table_dir(layer, table)
        if not base.exists():
            return []
        return sorted(p for p in base.rglob(MANIFEST) if TMP_PREFIX not in str(p.parent))

    def tables(self) -> Iterator[tuple[str, str]]:
        """(layer, table) of every table that has at least one published partition."""
        for layer in LAYERS:
            base = self.root / layer
            if not base.exists():
                continue
            depth = "*/*" if layer == "quarantine" else "*"
            for path in sorted(base.glob(depth)):
                if path.is_dir() and TMP_PREFIX not in str(path.relative_to(base)):
                    yield layer, str(path.relative_to(base))

    def scan(
        self,
        layer: str,
        table: str,
        partitions: list[dict[str, str]],
        *,
        partition_columns: bool = False,
    ) -> pl.LazyFrame | None:
        """Lazy frame over the given partitions (None when none of them holds files), with the
        partition keys (``dt``, ``as_of``) as columns when ``partition_columns``."""
        files = [
            str(f)
            for p in partitions
            for f in sorted(self.partition_dir(layer, table, p).glob("*.parquet"))
        ]
        if not files:
            return None
        return pl.scan_parquet(
            files,
            glob=False,
            missing_columns="insert",
            extra_columns="ignore",
            hive_partitioning=partition_columns,
        )

    def scan_published(
        self, layer: str, table: str, partitions: list[dict[str, str]]
    ) -> pl.LazyFrame:
        """``scan`` of published partitions (each holds the file ``write_partition`` wrote, or
        those ``seal_partition`` sealed): a FileNotFoundError, not None, when none holds one."""
        frame = self.scan(layer, table, partitions)
        if frame is None:
            names = ", ".join(partition_name(p) for p in partitions)
            raise FileNotFoundError(
                f"{layer}/{table}: no Parquet file in {names or 'no partition'}; expected the "
                "files its manifests list"
            )
        return frame

    def glob(self, layer: str, table: str) -> str:
        """The glob that reads every published file of a table (for DuckDB and friends)."""
        return f"{self.table_dir(layer, table)}/*/*.parquet"


def _read_manifest(manifest_path: Path) -> Manifest | None:
    try:
        return Manifest.model_validate_json(manifest_path.read_bytes())
    except FileNotFoundError:
        return None


def write_json_atomic(path: Path, text: str, *, where: str | None = None) -> None:
    """Write ``text`` beside ``path`` and rename it into place (``where``: the file's final
    place, for crash points, when ``path`` is in a staging folder)."""
    where = where or str(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    with tmp.open("w") as fh:
        half = len(text) // 2
        fh.write(text[:half])
        fh.flush()
        crash_point("json-half", where)
        fh.write(text[half:])
    crash_point("json-staged", where)
    os.replace(tmp, path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap_in(staging: Path, target: Path) -> None:
    """Make ``staging`` the partition at ``target`` in one step; the old one ends in ``staging``."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        return
    # No atomic exchange on this platform: rename aside, then in (a reader may briefly miss it).
    aside = staging.parent / f"{TMP_PREFIX}old-{uuid.uuid4().hex}"
    os.rename(target, aside)
    os.rename(staging, target)
    os.rename(aside, staging)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0
