"""The catalog: every table with its partitions, rows, bytes and freshness, from the manifests."""

from __future__ import annotations

import polars as pl

from nightowl.schemas.landing import SOURCES
from nightowl.warehouse.ledger import Ledger, live_deliveries
from nightowl.warehouse.store import Warehouse


def table_summaries(wh: Warehouse) -> pl.DataFrame:
    """One row per table: layer, table, partitions, rows, bytes, first/last partition, updated."""
    rows = []
    for layer, table in wh.tables():
        manifests = wh.manifests(layer, table)
        if not manifests:
            continue
        keys = ["/".join(m.partition.values()) for m in manifests]
        rows.append(
            {
                "layer": layer,
                "table": table.replace("source=", "").replace("/stage=", " · "),
                "partitions": len(manifests),
                "rows": sum(m.rows for m in manifests),
                "bytes": sum(m.bytes for m in manifests),
                "first": min(keys),
                "last": max(keys),
                "updated": max(m.created_at for m in manifests),
            }
        )
    schema = {
        "layer": pl.String,
        "table": pl.String,
        "partitions": pl.Int64,
        "rows": pl.Int64,
        "bytes": pl.Int64,
        "first": pl.String,
        "last": pl.String,
        "updated": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def delivery_lines(wh: Warehouse) -> list[str]:
    """One line per source with early rows held (how many, for which days), and one per source
    whose deliveries include corrections or copies (how many, the latest named)."""
    lines = []
    for layer, table in wh.tables():
        if layer != "held":
            continue
        manifests = wh.manifests(layer, table)
        days = [m.partition["dt"] for m in manifests if m.rows]
        if days:
            source = table.replace("source=", "")
            lines.append(
                f"{source}: held {sum(m.rows for m in manifests):,} rows (days {listed(days)})"
            )
    for source in SOURCES:
        entries = Ledger(wh).entries(source)
        live = {e.sha256 for e in live_deliveries(entries)}
        replaced = [e for e in entries if e.sha256 not in live]
        copies = [name for e in entries for name in e.copies]
        if replaced:
            latest = max(replaced, key=lambda e: e.seq or 0)
            lines.append(
                f"{source}: {len(replaced)} delivery version(s) superseded by a correction "
                f"(latest: {latest.name}, first delivered {latest.arrival_day})"
            )
        if copies:
            lines.append(f"{source}: {len(copies)} copy(ies) skipped ({listed(copies)})")
    return lines


def listed(names: list[str], most: int = 5) -> str:
    """``names`` for a message: the first ``most`` of them, and how many more there are."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
