"""The ingest ledger: one entry per landing file ingested, keyed by the file's content hash.

An entry is written only after the file's raw and quarantine rows are published, so a crash or a
file that fails leaves no entry and the file is ingested again next time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from warehouse.manifest import InputRef
from warehouse.store import Warehouse, write_json_atomic


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
    run_date: str
    raw_files: list[str] = Field(description="its accepted rows: raw Parquet parts, in order")
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    unknown_columns: list[str] = Field(default_factory=list)
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


class Ledger:
    """Read and record ledger entries in the warehouse."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def get(self, source: str, sha256: str) -> LedgerEntry | None:
        path = self.warehouse.ledger_dir(source) / f"{sha256}.json"
        try:
            return LedgerEntry.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def record(self, entry: LedgerEntry) -> None:
        folder = self.warehouse.ledger_dir(entry.source)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / f"{entry.sha256}.json", entry.model_dump_json(indent=2))

    def entries(self, source: str) -> list[LedgerEntry]:
        """Every entry of a source, in ingest order (run date, then file name)."""
        folder = self.warehouse.ledger_dir(source)
        if not folder.exists():
            return []
        found = [LedgerEntry.model_validate_json(p.read_bytes()) for p in folder.glob("*.json")]
        return sorted(found, key=lambda e: (e.run_date, e.name, e.sha256))
