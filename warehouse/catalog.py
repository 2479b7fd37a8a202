"""The catalog: every table with its partitions, rows, bytes and freshness, from the manifests."""

from __future__ import annotations

import polars as pl

from warehouse.store import Warehouse


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
        "layer": pl.String, "table": pl.String, "partitions": pl.Int64, "rows": pl.Int64,
        "bytes": pl.Int64, "first": pl.String, "last": pl.String, "updated": pl.String,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def held_lines(wh: Warehouse) -> list[str]:
    """One line per source with early rows held for their day: how many, and which days."""
    lines = []
    for layer, table in wh.tables():
        if layer != "held":
            continue
        manifests = wh.manifests(layer, table)
        days = [m.partition["dt"] for m in manifests if m.rows]
        if days:
            shown = ", ".join(days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")
            source = table.replace("source=", "")
            lines.append(f"{source}: held {sum(m.rows for m in manifests):,} rows (days {shown})")
    return lines
