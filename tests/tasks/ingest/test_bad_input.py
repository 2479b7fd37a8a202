"""Hostile and broken landing files (tests/data/bad/): each is refused with a message naming it or
ingested with every row accounted for, and never stops the good files beside it."""

from __future__ import annotations

import os
import shutil
import time
import tomllib
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightowl.schemas.landing import SOURCES
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest.units import IngestFailed, ingest_source
from nightowl.warehouse.ledger import Ledger
from nightowl.warehouse.manifest import file_sha256
from nightowl.warehouse.store import Warehouse

CORPUS = Path(__file__).parents[2] / "data" / "bad"
EXPECTED = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))
RUN_DATE = date(2026, 11, 20)
# One well-formed file per source, dropped beside the bad one.
GOOD = {
    "events": "user_id,event_time,event_type\nu1,2026-11-19T08:00:00Z,view\n",
    "items": "item_id,title,price\ni1,mug,4.5\n",
    "feedback": '{"created_at": "2026-11-19T08:00:00Z", "rating": "4", "text": "fine"}\n',
    "market_prices": "date,item_id,competitor,price\n2026-11-19,i1,a,4.0\n",
    "market_indicators": "date,indicator,value\n2026-11-19,fx,1.1\n",
}
GOOD_NAME = {"feedback": "good.jsonl"}


def _landed(root: Path, source: str, *names: str) -> list[Path]:
    folder = root / "landing" / source
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / GOOD_NAME.get(source, "good.csv")
    good.write_text(GOOD[source])
    copies = [shutil.copy(CORPUS / name, folder / Path(name).name) for name in names]
    return [good, *map(Path, copies)]


def _ingest(root: Path, source: str) -> str | None:
    """Ingest a source's landing folder; the failure message, if any file was refused."""
    # Strict about users (the default keeps guests): an events file needs a user_id column and
    # a row without a user is quarantined, as expected.toml says.
    cfg = SourceConfig(missing_user="quarantine")
    try:
        ingest_source(Warehouse(root), source, cfg, RUN_DATE, root)
    except IngestFailed as exc:
        return str(exc)
    return None


def _quarantine(wh: Warehouse, source: str) -> pl.DataFrame:
    files = list((wh.root / "quarantine" / f"source={source}").rglob("*.parquet"))
    return pl.read_parquet(files) if files else pl.DataFrame({"file": [], "reason": []})


def test_the_corpus_has_thirty_files_across_all_five_sources():
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*") if p.parent.name in SOURCES}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 30
    assert {name.split("/")[0] for name in on_disk} == set(SOURCES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_bad_file_is_refused_by_name_or_accounted_for_row_by_row(name, tmp_path):
    expected, source = EXPECTED[name], name.split("/")[0]
    root = tmp_path / "data"
    good, bad = _landed(root, source, name)
    failure = _ingest(root, source)
    wh = Warehouse(root)
    entries = {e.name: e for e in Ledger(wh).entries(source)}
    assert entries[good.name].rows_accepted == 1  # the good file beside it always gets in
    if "refused" in expected:
        assert failure is not None and f"{bad}: " in failure
        assert expected["refused"] in failure
        assert bad.name not in entries  # not marked ingested: a fixed re-drop is read again
        assert not list(wh.root.rglob(f"{file_sha256(bad)[:16]}*.parquet"))
        return
    assert failure is None
    entry = entries[bad.name]
    counts = (entry.rows_read, entry.rows_accepted, entry.rows_quarantined)
    assert counts == (expected["read"], expected["accepted"], expected["quarantined"])
    assert entry.reconciles
    rows = _quarantine(wh, source).filter(pl.col("file") == bad.name)
    assert rows.height == expected["quarantined"]
    reasons = {part for reason in rows["reason"] for part in reason.split("; ")}
    assert reasons == {part for r in expected.get("reasons", []) for part in r.split("; ")}


def test_the_whole_corpus_at_once_ingests_every_readable_file(tmp_path):
    root = tmp_path / "data"
    for source in SOURCES:
        names = [n for n in EXPECTED if n.startswith(f"{source}/")]
        _landed(root, source, *names)
        failure = _ingest(root, source) or ""
        refused = {n for n in names if "refused" in EXPECTED[n]}
        for name in names:
            assert (f"/{Path(name).name}: " in failure) == (name in refused), name
        wh = Warehouse(root)
        entries = Ledger(wh).entries(source)
        assert {e.name for e in entries} == {Path(n).name for n in names if n not in refused} | {
            Path(GOOD_NAME.get(source, "good.csv")).name
        }
        assert all(e.reconciles for e in entries)
        assert _quarantine(wh, source).height == sum(e.rows_quarantined for e in entries)


# ---- fuzzing: generated CSV and JSON Lines, whatever they hold, are accounted for row by row
_cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "NaN", "-1", "1e309", "2026-11-19T08:00:00Z", '"', ",", "\n", "\x00"]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)
_COLUMNS = ["user_id", "event_time", "event_type", "quantity", "price", "extra"]


def _csv_text(rows: list[list[str]]) -> bytes:
    def quoted(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"'

    lines = [",".join(_COLUMNS)] + [",".join(quoted(c) for c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(_cell, min_size=len(_COLUMNS), max_size=len(_COLUMNS)), max_size=25),
    as_json=st.booleans(),
)
def test_generated_files_are_accounted_for_row_by_row(rows, as_json, tmp_path_factory):
    import json

    root = tmp_path_factory.mktemp("fuzz") / "data"
    folder = root / "landing" / "events"
    folder.mkdir(parents=True)
    if as_json:
        text = "".join(json.dumps(dict(zip(_COLUMNS, row, strict=True))) + "\n" for row in rows)
        path = folder / "fuzz.jsonl"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    else:
        path = folder / "fuzz.csv"
        path.write_bytes(_csv_text(rows))
    failure = _ingest(root, "events")
    entries = Ledger(Warehouse(root)).entries("events")
    if failure is not None:  # refused as a whole: named, and nothing of it kept as ingested
        assert f"{path}: " in failure and not entries
        return
    (entry,) = entries
    assert entry.rows_read == len(rows)
    assert entry.rows_read == entry.rows_accepted + entry.rows_quarantined
    quarantined = _quarantine(Warehouse(root), "events")
    assert quarantined.height == entry.rows_quarantined
    # A NUL in a contract column (not "extra", which is dropped) always quarantines its row.
    with_nul = {n for n, row in enumerate(rows, start=1) if any("\x00" in c for c in row[:-1])}
    assert with_nul <= (set(quarantined["row"]) if quarantined.height else set())


def test_links_out_and_files_still_being_copied_are_not_read(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    root = tmp_path / "data"
    folder = root / "landing" / "events"
    folder.mkdir(parents=True)
    (folder / "users.csv").symlink_to(secret)
    (folder / "events[1].csv").write_text(GOOD["events"])
    (folder / "2026-11-19.csv.part").write_text("user_id,event_ti")
    (folder / "fresh.csv").write_text(GOOD["events"])
    old = time.time() - 7200
    os.utime(folder / "events[1].csv", (old, old))
    cfg = SourceConfig(settle_seconds=3600)
    with pytest.raises(IngestFailed) as failed:
        ingest_source(Warehouse(root), "events", cfg, RUN_DATE, root)
    assert f"{folder / 'users.csv'}: a symbolic link to a file outside the landing folder" in str(
        failed.value
    )
    assert "root:x" not in str(failed.value) and "1 events file(s)" in str(failed.value)
    entries = Ledger(Warehouse(root)).entries("events")
    assert [(e.name, e.rows_accepted) for e in entries] == [("events[1].csv", 1)]


HOSTILE_NAMES = [
    "a..b.csv", "-rf.csv", "$(touch pwned).csv", "a b;rm -rf ~.csv", "x'--\".csv",
    "new\nline.csv", "ü ñ 漢字.csv", "%2e%2e%2fescape.csv", "\\..\\..\\win.csv",
]  # fmt: skip


def test_landing_file_names_cannot_reach_outside_the_data_root(tmp_path):
    root = tmp_path / "data"
    folder = root / "landing" / "events"
    folder.mkdir(parents=True)
    for n, name in enumerate(HOSTILE_NAMES):
        (folder / name).write_text(f"{GOOD['events']}u{n},not a time,view\n")
    outside = {p for p in tmp_path.rglob("*")}
    assert _ingest(root, "events") is None
    created = {p for p in tmp_path.rglob("*")} - outside
    assert created and all(p.is_relative_to(root) for p in created)
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.glob("*win*"))
    entries = Ledger(Warehouse(root)).entries("events")
    assert sorted(Path(e.file).name for e in entries) == sorted(HOSTILE_NAMES)
    # The bad row of each is quarantined under the file's own name, unchanged.
    assert sorted(_quarantine(Warehouse(root), "events")["file"]) == sorted(HOSTILE_NAMES)
