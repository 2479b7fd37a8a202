"""Deliveries and time: any order of runs over the same deliveries converges to the same warehouse.

The property test drives the ingest and clean units directly (no Prefect) over small shops: a
random sequence of deliveries — new, late, early, corrected, re-delivered under another name,
truncated then completed, unreadable then fixed — interleaved with runs of random dates, reruns
of old dates included. Replaying the same deliveries with the dates run in order must give the
same clean tables, quarantine, held rows and ledger, and every delivery's rows must reconcile.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest.units import (
    ACCOUNTING_COLUMNS,
    IngestFailed,
    clean_source,
    ingest_source,
)
from nightowl.warehouse.ledger import Ledger
from nightowl.warehouse.query import connection
from nightowl.warehouse.store import Warehouse

HEADER = "event_id,user_id,event_time,event_type,item_id,quantity,price\n"
FIRST = date(2026, 3, 1)
DAYS = 8
CFG = SourceConfig()
EXAMPLES = int(os.environ.get("DELIVERIES_EXAMPLES", "200"))


def _row(event: int, day_offset: int, hour: int, kind: str = "view") -> str:
    day = FIRST + timedelta(days=day_offset)
    stamp = f"{day.isoformat()}T{hour:02d}:00:00Z" if day_offset < 9000 else "2099-03-01T10:00:00Z"
    return f"e{event},u{event % 3},{stamp},{kind},i{event % 4},1,{event}.5\n"


def _content(day: int | None, rows: list[tuple[int, int, int, str]]) -> str:
    """A file's text: rows dated around ``day`` (late, early, far future) by their offsets."""
    base = 0 if day is None else day
    return HEADER + "".join(_row(e, base + off, h, k) for e, off, h, k in rows)


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 11),  # event ids repeat: duplicates within and across files
        st.sampled_from([0, 0, 0, -1, 1, 3, 9999]),  # on time, late, early, far future
        st.integers(0, 23),
        st.sampled_from(["view", "purchase", "add_to_cart"]),
    ),
    min_size=1,
    max_size=5,
)


@dataclass(frozen=True)
class Deliver:
    """Write a landing file: ``name`` with ``text`` (a cut text for a half-copied file)."""

    name: str
    text: str | bytes


@dataclass(frozen=True)
class Remove:
    name: str


@dataclass(frozen=True)
class Run:
    day: int


@st.composite
def scenarios(draw: st.DrawFn) -> list[object]:
    """Deliveries interleaved with runs of random dates."""
    ops: list[object] = []
    written: dict[str, str] = {}
    for _ in range(draw(st.integers(2, 9))):
        kind = draw(
            st.sampled_from(
                ["new", "new", "correct", "copy", "truncate", "broken", "undated", "run", "run"]
            )
        )
        if kind in ("new", "correct", "truncate") or (kind == "copy" and not written):
            day = draw(st.integers(0, DAYS - 1))
            name = f"{(FIRST + timedelta(days=day)).isoformat()}.csv"
            if kind == "correct" and written:
                name = draw(st.sampled_from(sorted(written)))
            text = _content(day, draw(rows_strategy))
            if kind == "truncate":  # half-copied now, whole later
                cut = draw(st.integers(len(HEADER) + 1, len(text) - 1))
                ops.append(Deliver(name, text[:cut]))
                if draw(st.booleans()):
                    ops.append(Run(draw(st.integers(0, DAYS - 1))))
            ops.append(Deliver(name, text))
            written[name] = text
        elif kind == "copy":
            original = draw(st.sampled_from(sorted(written)))
            copy = f"copy-{draw(st.integers(0, 2))}-{original}"
            ops.append(Deliver(copy, written[original]))
            written[copy] = written[original]
        elif kind == "broken":  # a truncated gzip fails its ingest; it is then taken away
            text = _content(0, draw(rows_strategy)).encode()
            ops.append(Deliver("broken.csv.gz", gzip.compress(text, mtime=0)[:-8]))
            ops.append(Run(draw(st.integers(0, DAYS - 1))))
            ops.append(Remove("broken.csv.gz"))
        elif kind == "undated":
            ops.append(
                Deliver(
                    "history.csv", _content(draw(st.integers(0, DAYS - 1)), draw(rows_strategy))
                )
            )
        else:
            ops.append(Run(draw(st.integers(0, DAYS - 1))))
    ops.append(Run(draw(st.integers(0, DAYS - 1))))
    return ops


def _run(root: Path, day: int) -> None:
    wh = Warehouse(root, "test")
    run_date = FIRST + timedelta(days=day)
    try:
        ingest_source(wh, "events", CFG, run_date, root)
    except IngestFailed:
        return  # the flow does not clean a source whose ingest failed
    clean_source(wh, "events", CFG, run_date, 24)


def _apply(root: Path, op: object) -> None:
    landing = root / "landing" / "events"
    if isinstance(op, Deliver):
        data = op.text.encode() if isinstance(op.text, str) else op.text
        (landing / op.name).write_bytes(data)
    elif isinstance(op, Remove):
        (landing / op.name).unlink(missing_ok=True)


def play(root: Path, ops: list[object], *, in_order: bool) -> None:
    """Apply ``ops``; with ``in_order``, each run instead runs every date after the latest one
    run so far, up to its own, in order (or the latest one again, for a rerun of an older date)."""
    (root / "landing" / "events").mkdir(parents=True)
    high = -1
    for op in ops:
        if not isinstance(op, Run):
            _apply(root, op)
        elif not in_order:
            _run(root, op.day)
        else:
            for day in range(high + 1, op.day + 1) if op.day > high else [high]:
                _run(root, day)
        if isinstance(op, Run):
            high = max(high, op.day)
    _run(root, high)  # the latest date, run last in both


def _table(root: Path, layer: str, pattern: str) -> pl.DataFrame:
    files = sorted((root / "warehouse" / layer).glob(pattern))
    if not files:
        return pl.DataFrame()
    frame = pl.concat(
        [pl.read_parquet(f, hive_partitioning=False) for f in files], how="diagonal_relaxed"
    )
    return frame.sort(frame.columns)


def state(root: Path) -> dict[str, pl.DataFrame | list]:
    """Everything a run leaves that must not depend on the order of runs."""
    wh = Warehouse(root, "test")
    ledger = [
        (e.name, e.sha256, e.seq, tuple(e.copies), e.rows_read, e.rows_accepted, e.rows_quarantined)
        for e in Ledger(wh).entries("events")
    ]
    accounting = wh.accounting_dir("events") / "deliveries.parquet"
    return {
        "clean": _table(root, "clean", "events/*/*.parquet"),
        "quarantine-clean": _table(root, "quarantine", "source=events/stage=clean/*/*.parquet"),
        # Ingest's quarantine is kept by the run that read the file: compare its rows only.
        "quarantine-ingest": _table(root, "quarantine", "source=events/stage=ingest/*/*.parquet"),
        "held": _table(root, "held", "source=events/*/*.parquet"),
        "ledger": ledger,
        "accounting": pl.read_parquet(accounting) if accounting.exists() else pl.DataFrame(),
        # Raw and ingest's quarantine are partitioned by the night each file arrived.
        "partitions": sorted(
            str(p.parent.relative_to(root / "warehouse"))
            for folder in ("clean", "held", "quarantine/source=events/stage=clean")
            for p in (root / "warehouse" / folder).glob("**/_manifest.json")
        ),
    }


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=scenarios())
def test_any_order_of_runs_converges_to_running_the_dates_in_order(tmp_path_factory, ops):
    base = tmp_path_factory.mktemp("deliveries")
    play(base / "any", ops, in_order=False)
    play(base / "ordered", ops, in_order=True)
    got, want = state(base / "any"), state(base / "ordered")
    for name in want:
        assert _same(got[name], want[name]), name
    # Rows in = accepted + held + quarantined + superseded + duplicates, per delivery, always.
    accounting = got["accounting"]
    if accounting.height:
        parts = [c for c in ACCOUNTING_COLUMNS if c != "rows_accepted"]
        assert accounting.filter(pl.col("rows_accepted") != pl.sum_horizontal(parts)).is_empty()
    shutil.rmtree(base)


def _same(a: object, b: object) -> bool:
    if isinstance(a, pl.DataFrame) and isinstance(b, pl.DataFrame):
        return a.equals(b)
    return a == b


# ---- the findings, one regression test each --------------------------------------------------
def _night(root: Path, day: str, source: str = "events", cfg: SourceConfig = CFG):
    """Ingest and clean one source for ``day``, as the nightly flow does."""
    wh = Warehouse(root, "test")
    ingested = ingest_source(wh, source, cfg, date.fromisoformat(day), root)
    return ingested, clean_source(wh, source, cfg, date.fromisoformat(day), 24)


def _events(root: Path, layer: str = "clean", source: str = "events") -> pl.DataFrame:
    folder = f"source={source}" if layer == "held" else source
    return _table(root, layer, f"{folder}/*/*.parquet")


def _lines(day: str, n: int, first: int = 0, kind: str = "view") -> str:
    stamp = [f"{day}T10:{i // 60:02d}:{i % 60:02d}Z" for i in range(first, first + n)]
    return "".join(
        f"{day}-e{i},u{i},{t},{kind},i1,1,2.5\n" for i, t in enumerate(stamp, start=first)
    )


def _drop(root: Path, name: str, text: str | bytes, source: str = "events") -> Path:
    path = root / "landing" / source / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_rerunning_an_older_date_keeps_what_later_runs_published(data_root):
    _drop(
        data_root, "2026-03-10.csv", HEADER + _lines("2026-03-10", 3) + _lines("2026-03-17", 1, 90)
    )
    _drop(data_root, "2026-03-17.csv", HEADER + _lines("2026-03-17", 4))
    _night(data_root, "2026-03-10")
    _night(data_root, "2026-03-17")
    before = _events(data_root)
    _, rerun = _night(data_root, "2026-03-10")
    assert _events(data_root).equals(before)
    assert before.filter(pl.col("event_time").dt.date() == date(2026, 3, 17)).height == 5
    assert (
        rerun.future == 0
        and _table(data_root, "quarantine", "source=events/stage=clean/*/*.parquet").is_empty()
    )


def test_an_undated_history_file_is_not_cut_back_by_a_rerun(data_root):
    rows = "".join(f"2026-03-{d:02d},cpi,{100 + d}\n" for d in range(1, 18))
    _drop(data_root, "history.csv", "date,indicator,value\n" + rows, "market_indicators")
    _night(data_root, "2026-03-10", "market_indicators")
    _night(data_root, "2026-03-17", "market_indicators")
    _night(data_root, "2026-03-10", "market_indicators")
    assert _events(data_root, source="market_indicators").height == 17
    assert _events(data_root, "held", "market_indicators").is_empty()


def test_early_rows_are_held_queryable_and_moved_into_clean_when_their_day_comes(data_root):
    _drop(data_root, "2026-03-17.csv", HEADER + _lines("2026-03-17", 2))
    _drop(data_root, "plans.csv", HEADER + _lines("2026-03-22", 3, 50))
    _, cleaned = _night(data_root, "2026-03-17")
    held = _events(data_root, "held")
    assert held.height == 3 and held["waits_for"].unique().to_list() == [date(2026, 3, 21)]
    assert cleaned.held_total == 3 and cleaned.held_days == ["2026-03-22"]
    with connection(Warehouse(data_root)) as con:
        assert con.execute("select count(*) from held where source = 'events'").fetchone() == (3,)
    _, cleaned = _night(data_root, "2026-03-25")
    assert _events(data_root, "held").is_empty() and cleaned.held_total == 0
    assert _events(data_root).height == 5


def test_rows_beyond_the_horizon_are_quarantined_not_held(data_root):
    _drop(data_root, "2026-03-17.csv", HEADER + _lines("2026-03-17", 1) + _lines("2099-03-17", 1))
    _, cleaned = _night(data_root, "2026-03-17")
    bad = _table(data_root, "quarantine", "source=events/stage=clean/*/*.parquet")
    assert cleaned.future == 1 and bad["reason"].str.contains("too far in the future").all()
    assert _events(data_root, "held").is_empty()


def test_a_corrected_file_supersedes_its_earlier_version_and_says_so(data_root):
    path = _drop(data_root, "2026-03-09.csv", HEADER + _lines("2026-03-09", 5))
    _night(data_root, "2026-03-09")
    path.write_text(HEADER + _lines("2026-03-09", 5, kind="purchase"))
    ingested, cleaned = _night(data_root, "2026-03-10")
    events = _events(data_root)
    assert events["event_type"].to_list() == ["purchase"] * 5
    assert cleaned.duplicates == 0
    assert ingested.notes == [
        "events: 2026-03-09.csv changed since 2026-03-09: the new version supersedes it (5 rows)"
    ]
    accounting = pl.read_parquet(
        Warehouse(data_root).accounting_dir("events") / "deliveries.parquet"
    )
    assert accounting.sort("seq").select("live", "rows_clean", "rows_superseded").rows() == [
        (False, 0, 5),
        (True, 5, 0),
    ]


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_the_later_version_of_a_same_day_correction_wins_whatever_its_hash(data_root, order):
    versions = {
        "a": "date,item_id,competitor,price\n2026-03-12,i1,acme,10\n",
        "b": "date,item_id,competitor,price\n2026-03-12,i1,acme,12\n",
    }
    path = _drop(data_root, "2026-03-12.csv", versions[order[0]], "market_prices")
    _night(data_root, "2026-03-12", "market_prices")
    path.write_text(versions[order[1]])
    ingested, _ = _night(data_root, "2026-03-12", "market_prices")
    assert _events(data_root, source="market_prices")["price"].to_list() == [
        10.0 if order[1] == "a" else 12.0
    ]
    assert "supersedes it (1 rows)" in ingested.notes[0]


def test_a_day_whose_ingest_failed_is_cleaned_by_the_next_run(data_root):
    _drop(data_root, "2026-03-11.csv", HEADER + _lines("2026-03-11", 4))
    broken = _drop(
        data_root,
        "2026-03-11-b.csv.gz",
        gzip.compress((HEADER + _lines("2026-03-11", 2, 7)).encode())[:-8],
    )
    with pytest.raises(IngestFailed, match="truncated or corrupt gzip"):
        _night(data_root, "2026-03-11")
    broken.unlink()
    _drop(data_root, "2026-03-12.csv", HEADER + _lines("2026-03-12", 1))
    _, cleaned = _night(data_root, "2026-03-12")
    days = _events(data_root)["event_time"].dt.date().value_counts().sort("event_time").rows()
    assert days == [(date(2026, 3, 11), 4), (date(2026, 3, 12), 1)]
    assert "2026-03-11" in cleaned.partitions


def test_the_same_content_under_a_second_name_is_skipped_and_counted_once(data_root):
    text = HEADER + _lines("2026-03-05", 6)
    _drop(data_root, "2026-03-05.csv", text)
    _drop(data_root, "z-copy-2026-03-05.csv", text)
    ingested, cleaned = _night(data_root, "2026-03-05")
    assert ingested.rows_read == cleaned.rows_in == cleaned.rows_out == 6
    assert ingested.skipped == ["z-copy-2026-03-05.csv"]
    assert ingested.notes == [
        "events: z-copy-2026-03-05.csv has the same content as 2026-03-05.csv: skipped"
    ]
    (entry,) = Ledger(Warehouse(data_root)).entries("events")
    assert entry.copies == ["z-copy-2026-03-05.csv"]


def test_a_file_read_first_by_an_older_nights_run_lands_in_the_night_it_arrived(data_root):
    # A backfill of 03-16 beside tonight's (03-17) run: tonight's flow raised the mark, and the
    # backfill took the source's lock first.
    _drop(data_root, "2026-03-16.csv", HEADER + _lines("2026-03-16", 2))
    _night(data_root, "2026-03-16")
    _drop(data_root, "2026-03-17.csv", HEADER + _lines("2026-03-17", 3))
    wh = Warehouse(data_root, "test")
    wh.raise_high_water("2026-03-17")
    backfill, _ = _night(data_root, "2026-03-16")
    tonight, _ = _night(data_root, "2026-03-17")
    assert backfill.newly_ingested == ["2026-03-17.csv"]
    assert [e.name for e in tonight.files] == ["2026-03-17.csv"]
    (entry,) = [e for e in Ledger(wh).entries("events") if e.name == "2026-03-17.csv"]
    assert entry.run_date == "2026-03-17"
    raw = {
        m.partition["dt"]: [i.content_hash for i in m.inputs] for m in wh.manifests("raw", "events")
    }
    assert raw == {
        "2026-03-16": [Ledger(wh).entries("events")[0].sha256],
        "2026-03-17": [entry.sha256],
    }
    assert tonight.content_hash == wh.manifest("raw", "events", {"dt": "2026-03-17"}).content_hash
