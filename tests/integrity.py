"""What a reader of the warehouse may rely on, checked from the files alone (for crash and
concurrency tests): every published partition is whole and agrees with its manifest; and what no
output may hold (contact details from feedback)."""

from __future__ import annotations

import re

import polars as pl

from nightowl.warehouse.manifest import MANIFEST, Manifest, file_sha256
from nightowl.warehouse.store import TMP_PREFIX, Warehouse

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


# A number as people write it: digits, maybe with spaces, dashes, dots or brackets between.
WRITTEN_NUMBER = re.compile(r"\+?\d[\d ().-]*\d")


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def contact_details_found(wh: Warehouse, values: list[str]) -> list[str]:
    """Where any of ``values`` (e-mail addresses, phone and card numbers) appears in an output:
    every table but raw (which keeps landing files as given), the report pages and downloads,
    and the JSON beside them. Numbers are also looked for however they are spaced."""
    numbers = {_digits(v) for v in values if len(_digits(v)) >= 7}
    found: list[str] = []
    for layer, table in wh.tables():
        if layer == "raw":
            continue
        for path in sorted(wh.table_dir(layer, table).rglob("*.parquet")):
            frame = pl.read_parquet(path)
            for column, dtype in frame.schema.items():
                if dtype == pl.String:
                    cells = "\n".join(frame[column].drop_nulls().to_list())
                elif dtype.is_nested():
                    cells = frame.select(column).write_ndjson()
                else:
                    continue
                found += _in_text(f"{path}:{column}", cells, values, numbers)
    pages = wh.pages_root.rglob("*") if wh.pages_root.exists() else []
    for path in sorted(p for p in [*wh.root.rglob("*.json"), *pages] if p.is_file()):
        if "raw" not in path.relative_to(wh.data_root).parts:
            found += _in_text(path, path.read_text(errors="replace"), values, numbers)
    return found


def _in_text(where: object, text: str, values: list[str], numbers: set[str]) -> list[str]:
    hits = {v for v in values if v in text}
    hits |= {_digits(m) for m in WRITTEN_NUMBER.findall(text)} & numbers
    return [f"{where}: {hit}" for hit in sorted(hits)]


def prefect_records() -> str:
    """Every log line, artifact, flow and task run (names, parameters, state messages) the API
    holds, as text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        readers = [client.read_flow_runs, client.read_task_runs, client.read_artifacts]
        held = [item for read in [*readers, client.read_logs] for item in _every(read)]
    return "\n".join(item.model_dump_json() for item in held)


def _every(read, page: int = 200) -> list:
    """All that a paged ``client.read_*`` returns, page after page."""
    items: list = []
    while batch := read(limit=page, offset=len(items)):
        items += batch
    return items
