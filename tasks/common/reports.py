"""What a step that publishes a prediction table partition reports back."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from nightowl.warehouse.manifest import Manifest


class TableReport(BaseModel):
    """A published prediction table partition (feedback tables, recommendations): what the next
    steps and the cache check read."""

    table: str
    as_of: str
    rows: int
    content_hash: str
    model_version: str | None = None
    notes: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0


def table_report(m: Manifest, started: float, **extra: Any) -> TableReport:
    """The report of a published prediction table partition, timed from ``started``."""
    return TableReport(
        table=m.table,
        as_of=m.partition["as_of"],
        rows=m.rows,
        content_hash=m.content_hash,
        seconds=round(time.perf_counter() - started, 3),
        **extra,
    )
