"""Ingest and clean against a real warehouse on disk: bad input of every kind, ledger, late data."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest.units import (
    IngestFailed,
    _recorded_counts,
    clean_source,
    ingest_source,
    raw_rows,
)
from nightowl.warehouse.ledger import DateRows, Ledger, LedgerEntry
from nightowl.warehouse.store import Warehouse

D = date(2026, 11, 27)
HEADER = "event_id,user_id,event_time,event_type,item_id,quantity,price\n"
GOOD = "e1,u1,2026-11-27T10:00:00Z,view,i1,1,9.99\n"


def _drop(root: Path, name: str, content: str | bytes, source: str = "events") -> Path:
    path = root / "landing" / source / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _ingest(root: Path, cfg: SourceConfig | None = None, run_date: date = D, source="events"):
    wh = Warehouse(root, "test")
    return wh, ingest_source(wh, source, cfg or SourceConfig(), run_date, root)


def _quarantine(wh: Warehouse, stage: str = "ingest") -> pl.DataFrame:
    files = sorted((wh.root / "quarantine").glob(f"source=events/stage={stage}/*/*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


# ---- files that cannot be read at all: the run says which file and what was expected -------
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty; expected at least a header row"),
        ("cols.csv", "user_id,event_type\nu1,view\n", "required column 'event_time' is missing"),
        (
            "cut.csv.gz",
            # mtime=0: the bytes are in the test id, which must not change between workers
            gzip.compress((HEADER + GOOD * 50).encode(), mtime=0)[:-30],
            "truncated or corrupt gzip",
        ),
        ("bad.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        ("x.xlsx", b"whatever", "cannot tell the format from the extension"),
    ],
)
def test_unreadable_files_fail_naming_the_file_and_are_not_ledgered(
    data_root, name, content, message
):
    _drop(data_root, "2026-11-27-ok.csv", HEADER + GOOD)
    bad = _drop(data_root, name, content)
    with pytest.raises(IngestFailed) as info:
        _ingest(data_root)
    assert str(bad) in str(info.value) and message in str(info.value)
    ledger = Ledger(Warehouse(data_root))
    assert [e.name for e in ledger.entries("events")] == ["2026-11-27-ok.csv"]  # the others went in


def test_a_fixed_and_redropped_file_is_ingested(data_root):
    bad = _drop(data_root, "x.csv", "user_id,event_type\nu1,view\n")
    with pytest.raises(IngestFailed):
        _ingest(data_root)
    bad.write_text(HEADER + GOOD)
    _, report = _ingest(data_root)
    assert report.newly_ingested == ["x.csv"] and report.rows_read == 1


def test_a_mapping_naming_a_missing_column_fails_the_file(data_root):
    _drop(data_root, "a.csv", HEADER + GOOD)
    with pytest.raises(IngestFailed, match="names 'Customer ID', which the file does not have"):
        _ingest(data_root, SourceConfig(columns={"Customer ID": "user_id"}))


# ---- rows that break the contract: quarantined with a reason, counts reconcile --------------
@pytest.mark.parametrize(
    ("line", "column", "reason"),
    [
        ("e2,u1,27.11.2026 10h,view,i1,1,9.99\n", "event_time", "event_time: expected a timestamp"),
        ("e2,u1,2026-11-27T10:00:00Z,view,i1,lots,9.99\n", "quantity", "expected a whole number"),
        ("e2,u1,2026-11-27T10:00:00Z,view,i1,1,-4\n", "price", "price: must be ≥ 0"),
        ("e2,,2026-11-27T10:00:00Z,view,i1,1,1\n", "user_id", "user_id: required value is missing"),
    ],
)
def test_bad_rows_are_quarantined_and_counts_reconcile(data_root, line, column, reason):
    _drop(data_root, "a.csv", HEADER + GOOD + line + GOOD.replace("e1", "e3"))
    wh, report = _ingest(data_root, SourceConfig(missing_user="quarantine"))
    entry = report.files[0]
    assert (entry.rows_read, entry.rows_accepted, entry.rows_quarantined) == (3, 2, 1)
    bad = _quarantine(wh)
    assert bad.select("file", "row", "column").row(0) == ("a.csv", 2, column)
    assert reason in bad["reason"][0]


def test_a_guest_purchase_lands_in_raw_with_a_null_user_by_default(data_root):
    _drop(data_root, "a.csv", HEADER + GOOD + "e2,,2026-11-27T11:00:00Z,purchase,i1,2,5.00\n")
    wh, report = _ingest(data_root)
    entry = report.files[0]
    assert (entry.rows_read, entry.rows_accepted, entry.rows_quarantined) == (2, 2, 0)
    raw = pl.read_parquet([wh.root / f for f in entry.raw_files]).sort("event_id")
    assert raw.select("event_id", "user_id").rows() == [("e1", "u1"), ("e2", None)]


def test_non_utf8_bytes_quarantine_the_row_not_the_file(data_root):
    _drop(
        data_root, "a.csv", HEADER.encode() + b"e2,caf\xe9,2026-11-27,view,i1,1,1\n" + GOOD.encode()
    )
    wh, report = _ingest(data_root)
    assert report.files[0].rows_quarantined == 1 and report.files[0].rows_accepted == 1
    assert "not UTF-8" in _quarantine(wh)["reason"][0]


def test_a_json_lines_row_with_non_utf8_bytes_is_quarantined_not_the_file(data_root):
    rows = [
        b'{"feedback_id": "f1", "text": "Great caf\xc3\xa9", "created_at": "2026-11-27T10:00:00Z"}',
        b'{"feedback_id": "f2", "text": "Bad caf\xe9", "created_at": "2026-11-27T11:00:00Z"}',
    ]
    _drop(data_root, "2026-11-27.jsonl", b"\n".join(rows) + b"\n", source="feedback")
    wh, report = _ingest(data_root, source="feedback")
    entry = report.files[0]
    assert (entry.rows_read, entry.rows_accepted, entry.rows_quarantined) == (2, 1, 1)
    files = sorted((wh.root / "quarantine").glob("source=feedback/stage=ingest/*/*.parquet"))
    bad = pl.read_parquet(files[0])
    assert bad.select("row", "column").row(0) == (2, "text")
    assert "bytes that are not UTF-8" in bad["reason"][0]
    raw = pl.read_parquet([wh.root / f for f in entry.raw_files])
    assert raw["text"].to_list() == ["Great café"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("nul.csv", (HEADER + GOOD + GOOD.replace("e1,u1", "e2,u\x00x")).encode()),
        (
            "escaped.jsonl",
            b'{"event_id": "e1", "user_id": "u\\u0000x", "event_time": '
            b'"2026-11-27T10:00:00Z", "event_type": "view"}\n',
        ),
        ("nul.csv.gz", gzip.compress((HEADER + GOOD.replace("i1", "i\x00")).encode(), mtime=0)),
    ],
)
def test_a_nul_character_quarantines_its_row_however_it_is_written(data_root, name, content):
    """Text files are scanned for NUL once (a byte, or a JSON escape) instead of value by value."""
    _drop(data_root, name, content)
    wh, report = _ingest(data_root)
    assert report.files[0].rows_quarantined == 1
    assert "contains a NUL character" in _quarantine(wh)["reason"][0]


def test_a_nul_in_a_configured_constant_quarantines_the_rows_it_fills(data_root):
    _drop(data_root, "a.csv", HEADER + GOOD)
    wh, report = _ingest(data_root, SourceConfig(constants={"channel": "w\x00b"}))
    assert report.files[0].rows_quarantined == 1
    assert _quarantine(wh)["reason"][0] == "channel: contains a NUL character"


def test_latin1_files_read_when_the_encoding_is_configured(data_root):
    _drop(data_root, "a.csv", HEADER.encode() + b"e2,caf\xe9,2026-11-27,view,i1,1,1\n")
    wh, report = _ingest(data_root, SourceConfig(encoding="latin-1"))
    assert report.files[0].rows_accepted == 1
    raw = pl.read_parquet([wh.root / f for f in report.files[0].raw_files])
    assert raw["user_id"].to_list() == ["café"]


def test_header_only_file_is_ingested_with_no_rows(data_root):
    _drop(data_root, "a.csv", HEADER)
    _, report = _ingest(data_root)
    assert report.files[0].rows_read == 0 and report.newly_ingested == ["a.csv"]


def test_empty_strings_in_json_lines_are_missing_values(data_root):
    _drop(
        data_root,
        "a.jsonl",
        '{"created_at": "2026-11-27", "text": "", "rating": null}\n',
        "feedback",
    )
    wh, report = _ingest(data_root, source="feedback")
    assert report.files[0].rows_quarantined == 1
    reasons = pl.read_parquet(next((wh.root / "quarantine").glob("*/*/*/*.parquet")))["reason"]
    assert reasons.to_list() == ["needs at least one of text or rating"]


def test_an_empty_json_lines_file_is_zero_rows(data_root):
    _drop(data_root, "a.jsonl", "")
    _, report = _ingest(data_root)
    assert report.files[0].rows_read == 0


def test_unknown_columns_are_reported_and_dropped(data_root):
    _drop(data_root, "a.csv", HEADER.strip() + ",Country\n" + GOOD.strip() + ",UK\n")
    wh, report = _ingest(data_root)
    assert report.files[0].unknown_columns == ["Country"]
    assert (
        "Country" not in pl.read_parquet([wh.root / f for f in report.files[0].raw_files]).columns
    )


def test_json_lines_and_parquet_and_gzip_all_ingest(data_root):
    rows = {"user_id": ["u1"], "event_time": ["2026-11-27T10:00:00Z"], "event_type": ["view"]}
    pl.DataFrame(rows).write_ndjson(data_root / "landing/events/a.jsonl")
    pl.DataFrame(rows).write_parquet(data_root / "landing/events/b.parquet")
    _drop(data_root, "c.csv.gz", gzip.compress((HEADER + GOOD).encode()))
    _drop(
        data_root,
        "d.jsonl.gz",
        gzip.compress(b'{"user_id": 7, "event_time": "2026-11-27", "event_type": "view"}\n'),
    )
    _, report = _ingest(data_root)
    assert sorted(report.newly_ingested) == ["a.jsonl", "b.parquet", "c.csv.gz", "d.jsonl.gz"]
    assert all(e.rows_accepted == 1 for e in report.files)


# ---- the ledger: each file once ----------------------------------------------------------
def test_an_unchanged_redrop_is_a_noop_and_says_so(data_root):
    _drop(data_root, "2026-11-26.csv", HEADER + GOOD)
    _ingest(data_root, run_date=date(2026, 11, 26))
    _drop(data_root, "copy-of-it.csv", HEADER + GOOD)
    wh, report = _ingest(data_root)
    assert sorted(report.skipped) == ["2026-11-26.csv", "copy-of-it.csv"] and report.files == []
    assert len(list((wh.root / "raw/events").glob("*/*.parquet"))) == 1


def test_unchanged_files_are_not_read_again_to_hash_them(data_root, monkeypatch):
    import nightowl.tasks.ingest.units as units

    _drop(data_root, "2026-11-26.csv", HEADER + GOOD)
    _ingest(data_root, run_date=date(2026, 11, 26))
    hashed: list[str] = []
    real = units.file_sha256
    monkeypatch.setattr(units, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    _drop(data_root, "2026-11-27.csv", HEADER + GOOD.replace("e1", "e2"))
    _, report = _ingest(data_root)
    assert hashed == ["2026-11-27.csv"] and report.skipped == ["2026-11-26.csv"]


def test_files_dated_after_the_run_date_wait_for_their_run(data_root):
    _drop(data_root, "2026-11-27.csv", HEADER + GOOD)
    _drop(data_root, "2026-11-28.csv", HEADER + GOOD.replace("e1", "e9"))
    _, report = _ingest(data_root)
    assert report.newly_ingested == ["2026-11-27.csv"]


# ---- clean: duplicates, future rows, late data republishes its partition ---------------------
def test_clean_rejects_duplicates_and_future_rows(data_root):
    future = "e7,u1,2099-01-01T00:00:00Z,view,i1,1,1\n"
    _drop(data_root, "a.csv", HEADER + GOOD + GOOD + future)
    wh, _ = _ingest(data_root)
    report = clean_source(wh, "events", SourceConfig(), D, 24)
    assert (report.rows_in, report.rows_out, report.duplicates, report.future) == (3, 1, 1, 1)
    reasons = sorted(_quarantine(wh, "clean")["reason"])
    assert reasons[0].startswith("duplicate") and "in the future" in reasons[1]


def _two_nights_with_a_late_event(data_root: Path):
    """Nights of the 26th and 27th; the 27th's file brings a late event of the 26th."""
    day26 = date(2026, 11, 26)
    _drop(data_root, "2026-11-26.csv", HEADER + GOOD.replace("11-27", "11-26").replace("e1", "e0"))
    wh, _ = _ingest(data_root, run_date=day26)
    clean_source(wh, "events", SourceConfig(), day26, 24)
    late = GOOD.replace("e1", "late").replace("11-27", "11-26")
    _drop(data_root, "2026-11-27.csv", HEADER + GOOD + late)
    _ingest(data_root)
    return wh, clean_source(wh, "events", SourceConfig(), D, 24)


def _event_ids_of(wh: Warehouse, day: str) -> list[str]:
    part = wh.partition_dir("clean", "events", {"dt": day}) / "*.parquet"
    return sorted(pl.read_parquet(part)["event_id"])


def test_late_events_republish_their_own_partition(data_root):
    wh, report = _two_nights_with_a_late_event(data_root)
    assert sorted(report.partitions) == ["2026-11-26", "2026-11-27"]
    assert _event_ids_of(wh, "2026-11-26") == ["e0", "late"]


def test_recleaning_an_older_date_keeps_late_events_a_later_night_brought(data_root):
    wh, _ = _two_nights_with_a_late_event(data_root)
    clean_source(wh, "events", SourceConfig(), date(2026, 11, 26), 24)  # a rerun of the 26th
    assert _event_ids_of(wh, "2026-11-26") == ["e0", "late"]


def test_rerunning_a_date_leaves_identical_tables(data_root):
    _drop(
        data_root, "2026-11-27.csv", HEADER + GOOD * 3 + "e5,u2,2026-11-27T11:00:00Z,buy,i1,2,3\n"
    )
    wh, _ = _ingest(data_root)
    first = clean_source(wh, "events", SourceConfig(), D, 24)
    _ingest(data_root)
    second = clean_source(wh, "events", SourceConfig(), D, 24)
    assert first.partitions == second.partitions
    assert len(list((wh.root / "clean/events").glob("*/*.parquet"))) == 1


def test_items_are_a_snapshot_where_the_latest_row_wins(data_root):
    _drop(
        data_root,
        "2026-11-26.jsonl",
        '{"item_id": "i1", "price": 5}\n{"item_id": "i2", "price": 6}\n',
        "items",
    )
    wh, _ = _ingest(data_root, run_date=date(2026, 11, 26), source="items")
    _drop(data_root, "2026-11-27.jsonl", '{"item_id": "i1", "price": 7}\n', "items")
    _ingest(data_root, source="items")
    clean_source(wh, "items", SourceConfig(), D, 24)
    snap = pl.read_parquet(wh.partition_dir("clean", "items", {"dt": "2026-11-27"}) / "*.parquet")
    assert snap.select("item_id", "price").rows() == [("i1", 7.0), ("i2", 6.0)]


def test_raw_rows_of_files_ingested_before_a_contract_column_existed_read_it_as_null(data_root):
    _drop(
        data_root, "2026-11-27.jsonl", '{"item_id": "i1", "price": 5, "promotion": true}\n', "items"
    )
    wh, _ = _ingest(data_root, source="items")
    (entry,) = Ledger(wh).entries("items")
    fresh = raw_rows(wh, [entry]).collect()
    assert fresh["promotion"].to_list() == [True]
    for part in entry.raw_files:  # as an older version wrote it: no promotion column
        pl.read_parquet(wh.root / part).drop("promotion").write_parquet(wh.root / part)
    old = raw_rows(wh, [entry]).collect()
    assert old.schema == fresh.schema and old["promotion"].to_list() == [None]
    assert old.drop("promotion").equals(fresh.drop("promotion"))


def test_a_planned_price_is_ingested_ahead_and_in_the_catalogue_from_its_day(data_root):
    plans = SourceConfig(plans_ahead_days=7)
    _drop(data_root, "2026-11-27.jsonl", '{"item_id": "i1", "price": 5}\n', "items")
    _drop(
        data_root, "2026-11-30.jsonl", '{"item_id": "i1", "price": 4, "promotion": true}\n', "items"
    )
    wh, report = _ingest(data_root, plans, source="items")
    assert report.newly_ingested == ["2026-11-27.jsonl", "2026-11-30.jsonl"]

    def catalogue(run: date) -> list[tuple]:
        clean_source(wh, "items", plans, run, 24)
        part = wh.partition_dir("clean", "items", {"dt": run.isoformat()}) / "*.parquet"
        return pl.read_parquet(part).select("item_id", "price", "promotion").rows()

    assert catalogue(D) == [("i1", 5.0, None)]  # the plan waits for its day
    assert catalogue(date(2026, 11, 30)) == [("i1", 4.0, True)]


def test_quarantined_feedback_keeps_no_personal_data(data_root):
    row = (
        b'{"feedback_id": "f1", "text": "Mail me at jane.doe@example.com", "rating": 7, '
        b'"created_at": "2026-11-27T10:00:00Z"}\n'
    )
    _drop(data_root, "2026-11-27.jsonl", row, source="feedback")
    wh, report = _ingest(data_root, source="feedback")
    assert report.files[0].rows_quarantined == 1
    files = sorted((wh.root / "quarantine").glob("source=feedback/stage=ingest/*/*.parquet"))
    bad = pl.read_parquet(files[0])
    assert "rating" in bad["reason"][0]
    assert "jane.doe@example.com" not in bad["record"][0] and "[EMAIL]" in bad["record"][0]
    raw = sorted((wh.root / "raw" / "feedback").glob("*/*.parquet"))
    assert all(pl.read_parquet(f).height == 0 for f in raw)  # the raw row itself was rejected


def test_cleaning_a_day_at_a_time_writes_what_cleaning_all_days_at_once_does(tmp_path):
    """The first night's slices: the 25th's event delivered again in the 27th's file is found."""

    def event(event_id: str, user: str, ts: str, kind: str = "view") -> str:
        return f"{event_id},{user},2026-11-{ts}Z,{kind},i1,1,1"

    rows = {
        "2026-11-25.csv": [event("e1", "u1", "25T10:00:00"), event("e2", "u1", "25T11:00:00")],
        "2026-11-26.csv": [event("e3", "u2", "26T09:00:00"), event("e3", "u2", "26T09:00:00")],
        "2026-11-27.csv": [
            event("e1", "u1", "25T10:00:00"),  # the 25th's e1 again, two files later
            event("e4", "u2", "26T23:00:00", "buy"),  # late
            "e5,u3,2099-01-01T00:00:00Z,view,i1,1,1",
        ],
    }
    results = []
    for chunk_rows in (1_000, 1):
        root = tmp_path / str(chunk_rows)
        (root / "landing" / "events").mkdir(parents=True)
        for name, lines in rows.items():
            _drop(root, name, HEADER + "\n".join(lines) + "\n")
        wh, _ = _ingest(root)
        report = clean_source(wh, "events", SourceConfig(), D, 24, chunk_rows=chunk_rows)
        results.append((report.model_dump(exclude={"seconds"}), _quarantine(wh, "clean")))
    (whole, whole_bad), (sliced, sliced_bad) = results
    assert sliced == whole
    assert (whole["rows_in"], whole["duplicates"], whole["future"]) == (7, 2, 1)
    assert sliced_bad.sort("file", "row").equals(whole_bad.sort("file", "row"))


def test_the_ledger_counts_each_files_rows_per_date_and_those_without_an_id(data_root):
    late = ",u1,2026-11-26T23:00:00Z,view,i1,1,1\n"  # no id, and a day early
    _drop(data_root, "a.csv", HEADER + GOOD + GOOD.replace("e1", "e2") + late + "bad,row\n")
    _, report = _ingest(data_root)
    (entry,) = report.files
    assert [(d.dt, d.rows) for d in entry.rows_by_date] == [("2026-11-26", 1), ("2026-11-27", 2)]
    assert entry.rows_without_id == 1 and entry.dates == ["2026-11-26", "2026-11-27"]


def test_cleaning_by_ledger_counts_writes_what_counting_the_raw_rows_does(tmp_path):
    """Entries from before the ledger counted rows are cleaned by counting the raw rows."""
    rows = [
        GOOD,
        ",u1,2026-11-27T10:00:00Z,view,i1,1,9.99\n" * 2,
        GOOD,
        GOOD.replace("e1", "e9").replace("27T", "26T"),
    ]
    results = []
    for recorded in (True, False):
        root = tmp_path / str(recorded)
        (root / "landing" / "events").mkdir(parents=True)
        _drop(root, "2026-11-27.csv", HEADER + "".join(rows))
        wh, _ = _ingest(root)
        if not recorded:
            ledger = Ledger(wh)
            for e in ledger.entries("events"):
                ledger.record(e.model_copy(update={"rows_by_date": None, "rows_without_id": None}))
        report = clean_source(wh, "events", SourceConfig(), D, 24, chunk_rows=1)
        results.append(report.model_dump(exclude={"seconds"}))
    assert results[0] == results[1]
    assert (results[0]["rows_out"], results[0]["duplicates"]) == (3, 2)


@pytest.mark.parametrize("compression", ["lz4", "zstd", "uncompressed"])
def test_raw_compression_changes_the_raw_parts_and_nothing_cleaned(tmp_path, compression):
    lines = HEADER + GOOD + GOOD + "e2,u2,2026-11-27T11:00:00Z,buy,i1,2,3\n" + "bad,row\n"
    reports = {}
    for codec in ("snappy", compression):
        root = tmp_path / codec
        (root / "landing" / "events").mkdir(parents=True)
        _drop(root, "2026-11-27.csv", lines)
        wh = Warehouse(root, "test")
        ingest_source(wh, "events", SourceConfig(), D, root, raw_compression=codec)
        (part,) = (wh.root / "raw" / "events").glob("*/*.parquet")
        written = pq.read_metadata(part).row_group(0).column(0).compression
        assert written == {"lz4": "LZ4", "zstd": "ZSTD"}.get(codec, codec.upper())
        reports[codec] = clean_source(wh, "events", SourceConfig(), D, 24).partitions
    assert reports[compression] == reports["snappy"]  # the same clean bytes


def test_ledger_counts_stand_in_for_the_raw_rows_only_if_every_entry_counted_the_same_id():
    """An id column a later contract adds or renames reads as null in older parts."""
    entry = LedgerEntry(
        source="events", file="f.csv", name="f.csv", sha256="s", bytes=1, format="csv",
        run_date="2026-11-27", raw_files=[], rows_read=3, rows_accepted=3, rows_quarantined=0,
        code_version="test", rows_by_date=[DateRows(dt="2026-11-26", rows=1),
        DateRows(dt="2026-11-27", rows=2)], rows_without_id=1, id_column="event_id",
    )  # fmt: skip
    counts = _recorded_counts([entry, entry], ["2026-11-27"], "event_id")
    assert (counts.per_day, counts.missing_ids) == ({"2026-11-27": 4}, 2)
    assert _recorded_counts([entry], ["2026-11-27"], "order_id") is None
    older = entry.model_copy(update={"rows_by_date": None, "rows_without_id": None})
    assert _recorded_counts([entry, older], ["2026-11-27"], "event_id") is None


def test_events_without_an_id_get_content_ids_and_their_repeats_are_duplicates(tmp_path):
    (tmp_path / "landing" / "events").mkdir(parents=True)
    no_id = ",u1,2026-11-27T10:00:00Z,view,i1,1,9.99\n"
    _drop(tmp_path, "2026-11-27.csv", HEADER + GOOD + no_id + no_id)
    wh, _ = _ingest(tmp_path)
    report = clean_source(wh, "events", SourceConfig(), D, 24)
    assert (report.rows_out, report.duplicates) == (2, 1)
    ids = wh.scan("clean", "events", [{"dt": "2026-11-27"}]).collect()["event_id"].to_list()
    assert ids[0] == "e1" and ids[1].startswith("rh-")


def test_a_file_of_many_batches_gives_the_same_raw_rows_in_as_many_parts(tmp_path, monkeypatch):
    """Parts are written in the background while the next batch is validated: same rows, in
    file order, one part a batch."""
    rows = [f"e{i},u{i % 3},2026-11-27T10:{i % 60:02d}:00Z,view,i1,1,9.99\n" for i in range(10)]
    rows[4] = "e4,u1,yesterday,view,i1,1,9.99\n"  # quarantined, from the middle batch
    raw = {}
    for batch_rows in (1_000, 3):
        monkeypatch.setattr("nightowl.tasks.ingest.units.BATCH_ROWS", batch_rows)
        root = tmp_path / str(batch_rows)
        (root / "landing" / "events").mkdir(parents=True)
        _drop(root, "2026-11-27.csv", HEADER + "".join(rows))
        wh, report = _ingest(root)
        (entry,) = report.files
        assert (entry.rows_read, entry.rows_accepted, entry.rows_quarantined) == (10, 9, 1)
        assert len(entry.raw_files) == (1 if batch_rows == 1_000 else 4)
        raw[batch_rows] = pl.concat([pl.read_parquet(wh.root / f) for f in entry.raw_files])
    assert raw[3].equals(raw[1_000])
    assert raw[3]["_row"].to_list() == [1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_a_raw_part_that_cannot_be_written_fails_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    written = []

    def failing_second(frame, path, compression=None):
        if written:
            raise OSError(28, "No space left on device", str(path))
        written.append(path)
        frame.write_parquet(path)

    monkeypatch.setattr("nightowl.tasks.ingest.units.BATCH_ROWS", 2)
    monkeypatch.setattr("nightowl.tasks.ingest.units.write_parquet", failing_second)
    (tmp_path / "landing" / "events").mkdir(parents=True)
    _drop(tmp_path, "2026-11-27.csv", HEADER + GOOD * 5)
    with pytest.raises(OSError, match="No space left"):
        _ingest(tmp_path)
    wh = Warehouse(tmp_path, "test")
    assert Ledger(wh).entries("events") == []  # not marked ingested: dropping it again works
    assert not list((wh.root / "raw").glob("**/*.parquet"))
