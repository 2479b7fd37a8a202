"""Reading the clean layer as of a date: what every domain's units read their inputs with."""

from __future__ import annotations

from datetime import date

import polars as pl

from nightowl.errors import NotEnoughHistory
from nightowl.warehouse.manifest import InputRef
from nightowl.warehouse.store import Warehouse


def clean_before(
    wh: Warehouse, table: str, before: date | None
) -> tuple[pl.LazyFrame | None, list]:
    """A clean table's partitions dated before ``before`` (all when None), and their refs."""
    manifests = [
        m
        for m in wh.manifests("clean", table)
        if before is None or date.fromisoformat(m.partition["dt"]) < before
    ]
    frame = wh.scan("clean", table, [m.partition for m in manifests], partition_columns=True)
    return frame, [m.ref for m in manifests] if frame is not None else []


def event_days(wh: Warehouse) -> tuple[date, date]:
    """The first and last ``dt`` of the clean events table."""
    days = sorted(date.fromisoformat(m.partition["dt"]) for m in wh.manifests("clean", "events"))
    if not days:
        raise NotEnoughHistory("the clean events table is empty: run the nightly flow first")
    return days[0], days[-1]


def catalogue_before(wh: Warehouse, as_of: date) -> tuple[pl.LazyFrame | None, list[InputRef]]:
    """The newest items snapshot dated before ``as_of``; for dates before the first snapshot, the
    first one (an item's category does not change, and a backfilled history has no older one)."""
    snapshots = sorted(wh.manifests("clean", "items"), key=lambda m: m.partition["dt"])
    if not snapshots:
        return None, []
    before = [m for m in snapshots if m.partition["dt"] < as_of.isoformat()]
    latest = before[-1] if before else snapshots[0]
    return wh.scan("clean", "items", [latest.partition]), [latest.ref]
