"""The ingest ledger: one entry per delivery (one version of a landing file), keyed by its hash.

An entry is written only after the file's raw and quarantine rows are published, so a crash or a
file that fails leaves no entry and the file is ingested again next time.

Deliveries are numbered (``seq``) in the order they were first ingested, whatever the run dates
that ingested them: that order, not the run's date, decides which of two rows with the same key
came first. The latest delivery of a name is its live version; earlier ones are superseded.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from nightowl.warehouse.manifest import InputRef
from nightowl.warehouse.store import Warehouse, write_json_atomic


class DateRows(BaseModel):
    """How many of a file's accepted rows fall on one clean partition date."""

    dt: str
    rows: int


class LedgerEntry(BaseModel):
    """What became of one landing file: where its rows went and how they reconcile."""

    source: str
    file: str
    name: str
    sha256: str
    bytes: int
    mtime_ns: int | None = Field(default=None, description="when the file was last changed")
    format: str
    run_date: str = Field(description="the run that first ingested it (its raw partition)")
    # None in entries written before deliveries were numbered: see Ledger.entries.
    seq: int | None = Field(default=None, description="delivery number within the source")
    arrived: str | None = Field(
        default=None,
        description="the warehouse's date when it arrived: the later of the run date and the "
        "latest date ever run (an undated snapshot file is in force from this day)",
    )
    copies: list[str] = Field(
        default_factory=list, description="other names the same content was delivered under"
    )
    raw_files: list[str] = Field(description="its accepted rows: raw Parquet parts, in order")
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    unknown_columns: list[str] = Field(default_factory=list)
    column_warnings: list[str] = Field(
        default_factory=list, description="unknown columns that look like contract columns"
    )
    dates: list[str] = Field(default_factory=list, description="clean partitions its rows feed")
    # None in entries written before these were recorded: cleaning then counts the raw rows.
    rows_by_date: list[DateRows] | None = Field(
        default=None, description="accepted rows per clean partition date"
    )
    rows_without_id: int | None = Field(
        default=None, description="accepted rows whose source gives no id (cleaning hashes them)"
    )
    id_column: str | None = Field(default=None, description="the id rows_without_id looked for")
    code_version: str
    ingested_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def ref(self) -> InputRef:
        """This file as an input of what was made from it (manifest lineage)."""
        return InputRef(kind="landing", name=self.file, content_hash=self.sha256)

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.rows_accepted + self.rows_quarantined

    @property
    def names(self) -> list[str]:
        """Every landing name this content was delivered under, the first one first."""
        return [self.name, *self.copies]

    @property
    def arrival_day(self) -> str:
        return self.arrived or self.run_date


class Ledger:
    """Read and record ledger entries in the warehouse."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def record(self, entry: LedgerEntry) -> None:
        folder = self.warehouse.ledger_dir(entry.source)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / f"{entry.sha256}.json", entry.model_dump_json(indent=2))

    def entries(self, source: str) -> list[LedgerEntry]:
        """Every delivery of a source, in delivery order (``seq``).

        Entries written before deliveries were numbered come first, numbered in their old order
        (run date, then file name)."""
        folder = self.warehouse.ledger_dir(source)
        if not folder.exists():
            return []
        found = [LedgerEntry.model_validate_json(p.read_bytes()) for p in folder.glob("*.json")]
        legacy = sorted((e for e in found if e.seq is None), key=lambda e: (e.run_date, e.name))
        for place, e in enumerate(legacy, start=1):
            e.seq = -len(legacy) + place  # before every numbered delivery
        return sorted(found, key=lambda e: (e.seq, e.sha256))

    @staticmethod
    def next_seq(entries: list[LedgerEntry]) -> int:
        """The number of the next delivery after ``entries``."""
        return max((e.seq or 0 for e in entries), default=0) + 1


def live_versions(entries: list[LedgerEntry]) -> dict[str, LedgerEntry]:
    """Each landing name's live delivery (the latest of its versions), by name; ``entries`` in
    delivery order. A delivery superseded under every one of its names is not live."""
    live: dict[str, LedgerEntry] = {}
    for e in entries:
        for name in e.names:
            live[name] = e
    return live


def live_deliveries(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """The deliveries whose rows count (live under at least one name), in delivery order."""
    live = {e.sha256 for e in live_versions(entries).values()}
    return [e for e in entries if e.sha256 in live]


class DayBook(BaseModel):
    """What the last clean of one day (or snapshot date) was computed from, and what became of
    each delivery's rows on it."""

    signature: str = Field(description="hash of the deliveries, their order and the day's status")
    #: delivery sha256 → {"clean", "held", "quarantined", "duplicates", "superseded"} rows
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)


class CleanBook(BaseModel):
    """A source's clean accounting: one day book per day (or snapshot date) it has cleaned."""

    source: str
    days: dict[str, DayBook] = Field(default_factory=dict)

    @classmethod
    def load(cls, warehouse: Warehouse, source: str) -> CleanBook:
        path = warehouse.accounting_dir(source) / "days.json"
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return cls(source=source)

    def save(self, warehouse: Warehouse) -> None:
        folder = warehouse.accounting_dir(self.source)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "days.json", self.model_dump_json())

    def signature(self, day: str) -> str | None:
        book = self.days.get(day)
        return book.signature if book else None
