"""What a reader of the warehouse may rely on, checked from the files alone (for crash and
concurrency tests): every published partition is whole and agrees with its manifest."""

from __future__ import annotations

import polars as pl

from warehouse.manifest import MANIFEST, Manifest, file_sha256
from warehouse.store import TMP_PREFIX, Warehouse

# Raw and ingest-quarantine partitions accumulate one whole file per landing file (each moved in
# with one rename) and are sealed after; the other layers swap whole partitions in.
ACCUMULATING = ("raw", "quarantine")


def published_problems(wh: Warehouse, *, deep: bool = True) -> list[str]:
    """Everything about the published warehouse that a reader should never see (empty: none).

    ``deep`` also hashes every file against its manifest; without it, what a reader meets: the
    files a manifest lists are there, hold its row counts, and nothing else is beside them."""
    problems: list[str] = []
    for layer, table in wh.tables():
        base = wh.table_dir(layer, table)
        for folder in sorted({p.parent for p in base.rglob("*.parquet")}):
            if TMP_PREFIX in str(folder.relative_to(wh.root)):
                continue
            where = folder.relative_to(wh.root)
            on_disk = {p.name for p in folder.glob("*.parquet")}
            rows: dict[str, int] = {}
            for name in sorted(on_disk):
                try:
                    rows[name] = pl.scan_parquet(folder / name).select(pl.len()).collect().item()
                except Exception as exc:
                    problems.append(f"{where}/{name}: not a whole Parquet file ({exc})")
            try:
                manifest = Manifest.model_validate_json((folder / MANIFEST).read_bytes())
            except FileNotFoundError:
                if layer not in ACCUMULATING:
                    problems.append(f"{where}: data files without a manifest")
                continue
            except ValueError as exc:
                problems.append(f"{where}: manifest is not whole ({exc})")
                continue
            listed = {f.name: f for f in manifest.files}
            missing = sorted(set(listed) - on_disk)
            extra = sorted(on_disk - set(listed))
            if missing:
                problems.append(f"{where}: manifest lists missing files {missing}")
            if extra and layer not in ACCUMULATING:
                problems.append(f"{where}: files not in its manifest {extra}")
            for name in sorted(set(listed) & set(rows)):
                if rows[name] != listed[name].rows:
                    problems.append(
                        f"{where}/{name}: {rows[name]} rows, its manifest says {listed[name].rows}"
                    )
                elif deep and file_sha256(folder / name) != listed[name].sha256:
                    problems.append(f"{where}/{name}: content differs from its manifest")
    return problems


def published_state(wh: Warehouse) -> dict[str, str]:
    """Content hash of every published partition and report page file, by where it lives."""
    state = {
        f"{layer}/{table}/{'/'.join(m.partition.values())}": m.content_hash
        for layer, table in wh.tables()
        for m in wh.manifests(layer, table)
    }
    if wh.pages_root.exists():
        for page in sorted(wh.pages_root.glob("*/*")):
            state[f"page/{page.relative_to(wh.pages_root)}"] = file_sha256(page)
    return state
