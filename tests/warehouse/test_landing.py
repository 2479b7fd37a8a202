"""Finding landing files: which arrive for a run date, formats, gzip, encodings; reading them
whole and literally (no glob, no link out, nothing still being copied, no row cut short)."""

from __future__ import annotations

import csv
import gzip
import io
import os
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.schemas.landing import CONTRACTS
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest import contract as ingest
from nightowl.warehouse.landing import (
    OUTSIDE_LINK,
    LandingError,
    LandingFile,
    landing_files,
    open_landing,
    reader_problem,
    record_fields,
    scanned_text,
)


def _names(files):
    return [f.name for f in files]


def test_files_dated_after_the_run_date_have_not_arrived(data_root):
    folder = data_root / "landing" / "events"
    for name in ("2026-11-26.csv", "2026-11-27.csv.gz", "2026-11-28.csv", "history.parquet"):
        (folder / name).write_text("x")
    (folder / ".hidden.csv").write_text("x")
    found = landing_files("events", SourceConfig(), date(2026, 11, 27), data_root, data_root)
    assert _names(found) == ["history.parquet", "2026-11-26.csv", "2026-11-27.csv.gz"]
    assert [(f.format, f.compressed) for f in found] == [
        ("parquet", False), ("csv", False), ("csv", True),
    ]  # fmt: skip


def test_landing_folder_and_glob_come_from_config_relative_to_it(tmp_path, data_root):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "orders.tsv").write_text("x")
    (exports / "notes.md").write_text("x")
    cfg = SourceConfig(landing="exports", glob="*.tsv", delimiter="\t")
    found = landing_files("events", cfg, date(2026, 11, 27), data_root, tmp_path)
    assert _names(found) == ["orders.tsv"] and found[0].format == "csv"


def test_an_unknown_extension_is_a_problem_of_that_file_only(data_root):
    folder = data_root / "landing" / "events"
    (folder / "a.xlsx").write_text("x")
    (folder / "b.csv").write_text("x")
    found = landing_files("events", SourceConfig(), date(2026, 11, 27), data_root, data_root)
    problems = {f.name: f.problem for f in found}
    assert problems["b.csv"] is None and "cannot tell the format" in problems["a.xlsx"]


def test_a_missing_landing_folder_is_no_files(tmp_path):
    assert landing_files("events", SourceConfig(), date(2026, 11, 27), tmp_path, tmp_path) == []


def test_plans_dated_up_to_plans_ahead_days_have_arrived(data_root):
    for day in ("2026-11-27", "2026-11-30", "2026-12-01"):
        (data_root / "landing" / "items" / f"{day}.jsonl").write_text('{"item_id": "i1"}\n')
    cfg = SourceConfig(plans_ahead_days=3)
    found = landing_files("items", cfg, date(2026, 11, 27), data_root, data_root)
    assert _names(found) == ["2026-11-27.jsonl", "2026-11-30.jsonl"]


MIB = 1 << 20


@pytest.mark.parametrize(
    ("content", "utf8"),
    [
        (b"a" * (MIB - 1) + "é".encode() + b"b" * 10, True),  # é split between two chunks
        (b"a" * (MIB - 1) + b"\xc3" + b"b" * 10, False),  # é cut short, ASCII after it
        (b"a" * (3 * MIB) + b"\xff", False),  # a bad byte after ASCII-only chunks
        (b"a" * (2 * MIB) + b"\xe2\x82", False),  # the file ends inside a character
        ("£5 ".encode() * MIB, True),
    ],
)
def test_utf8_is_told_across_chunks_whatever_the_ascii_around_it(tmp_path, content, utf8):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    assert scanned_text(path).utf8 is utf8


_PIECES = st.sampled_from(
    [b"abc,", "é".encode(), "漢".encode(), b"\x00", b"\\u0000", b"\\", b"u00", b"\xff", b"\xc3"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECES, max_size=30), st.integers(1, 8), st.booleans())
def test_one_pass_tells_utf8_and_nul_whatever_the_chunk_boundaries(pieces, chunk, json_escapes):
    """The scan is the only look for NUL in text files: it must never miss one."""
    import tempfile
    from pathlib import Path

    content = b"".join(pieces)
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as mp:
        mp.setattr("nightowl.warehouse.landing.SCAN_CHUNK", chunk)
        path = Path(folder) / "f.txt"
        path.write_bytes(content)
        scan = scanned_text(path, json_escapes=json_escapes)
    try:
        content.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    assert scan.utf8 is utf8
    assert scan.nul is (b"\x00" in content or (json_escapes and b"\\u0000" in content))


# ---- reading a file whole: a row cut short is quarantined, never filled with empty values

HEAD = (
    "event_id,user_id,session_id,event_time,event_type,item_id,order_id,quantity,price,channel,"
    "device"
)


def _row(n: int, device: str = "desktop") -> str:
    return f"e{n},u{n},s{n},2026-11-19T08:00:0{n}Z,purchase,i1,o{n},1,17.55,web,{device}\n"


def _ingested(path: Path, **cfg) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Accepted and quarantined rows of one landing file, as ingest makes them."""
    config, contract = SourceConfig(**cfg), CONTRACTS["events"]
    name = path.name.lower().removesuffix(".gz")
    fmt = "jsonl" if name.endswith(".jsonl") else "parquet" if name.endswith(".parquet") else "csv"
    file = LandingFile(path, fmt, path.suffix == ".gz", None)
    good, bad = [], []
    with open_landing(file, config, path.parent) as opened:
        plan = ingest.column_plan(opened.rows.collect_schema().names(), contract, config)
        rows = ingest.mapped_rows(opened.rows, plan, contract)
        batches = list(rows.collect_batches(chunk_size=2)) or [rows.head(0).collect()]
        for batch in batches:  # small batches: rows cut short in any of them
            checked = ingest.validated_rows(batch, contract, config)
            good.append(ingest.accepted_rows(checked, contract))
            bad.append(ingest.quarantined_rows(checked, contract, config, path.name))
    return pl.concat(good), pl.concat(bad)


def test_a_row_cut_mid_copy_is_quarantined_not_read_as_a_shorter_value(tmp_path):
    # Cut after "17." of a price: the reader alone would read price 17.0, channel and device empty.
    path = tmp_path / "events.csv"
    path.write_text(f"{HEAD}\n{_row(1)}{_row(2)}e3,u3,s3,2026-11-19T08:00:03Z,purchase,i1,o3,1,17.")
    good, bad = _ingested(path)
    assert good["_row"].to_list() == [1, 2]
    assert bad["row"].to_list() == [3] and bad["column"].to_list() == [None]
    assert bad["reason"].to_list() == [
        "truncated: 9 fields where the header has 11, and the last line has no line end "
        "(the file may still be being copied)"
    ]
    assert '"price":"17."' in bad["record"][0]


def test_a_whole_looking_last_line_without_its_line_end_is_quarantined(tmp_path):
    path = tmp_path / "events.csv.gz"  # the line end is looked for after decompressing
    path.write_bytes(gzip.compress(f"{HEAD}\n{_row(1)}{_row(2)[:-5]}".encode()))  # "desk"
    good, bad = _ingested(path)
    assert good["_row"].to_list() == [1]
    assert bad["reason"].to_list() == [
        "truncated: the last line has no line end (the file may still be being copied)"
    ]


def test_rows_with_fewer_fields_are_quarantined_and_empty_last_values_are_not(tmp_path):
    path = tmp_path / "events.csv"
    rows = [_row(1), "e2,u2,s2,2026-11-19T08:00:02Z,view\n", _row(3, device=""), "\n", _row(5)]
    path.write_text(HEAD + "\n" + "".join(rows))
    good, bad = _ingested(path)
    assert good["_row"].to_list() == [1, 3, 5] and good["device"][1] is None
    assert dict(zip(bad["row"], bad["reason"], strict=True)) == {
        2: "truncated: 5 fields where the header has 11",
        4: "truncated: 1 field where the header has 11",
    }


def test_quoted_separators_and_line_ends_are_not_fields_or_rows(tmp_path):
    path = tmp_path / "events.csv"
    quoted = 'e1,u1,s1,2026-11-19T08:00:01Z,view,"i,1",o1,1,2.5,"we\nb, ""x""",\n'
    path.write_text(f"{HEAD}\n{quoted}e2,u2,s2,2026-11-19T08:00:02Z,view\n{_row(3)}")
    good, bad = _ingested(path)
    assert good["_row"].to_list() == [1, 3] and good["channel"][0] == 'we\nb, "x"'
    assert bad["reason"].to_list() == ["truncated: 5 fields where the header has 11"]


def test_a_header_only_file_without_a_line_end_has_no_rows(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(HEAD)
    good, bad = _ingested(path)
    assert good.height == 0 and bad.height == 0


def test_a_row_with_more_fields_than_the_header_is_named_in_the_refusal(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(f"{HEAD}\n{_row(1)}{_row(2)[:-1]},extra\n{_row(3)}")
    file = LandingFile(path, "csv", False, None)
    with open_landing(file, SourceConfig(), tmp_path) as opened:
        with pytest.raises(pl.exceptions.PolarsError) as caught:
            opened.rows.collect()
        assert reader_problem(caught.value, opened) == (
            "row 2 has 12 fields where the header has 11; expected one field per header column "
            "(a value holding the separator must be in quotes)"
        )
    assert "more fields" in reader_problem(caught.value)  # without the file: the reader's words


EVENT = '{"user_id": "u1", "event_time": "2026-11-19T08:00:00Z", "event_type": "view"}'


@pytest.mark.parametrize(
    ("last", "reason"),
    [
        ('{"user_id": "u3", "event_ti', "the last line has no line end"),
        ('{"user_id": "u3", "event_time": \n\n', "the last line is not whole JSON"),
        (EVENT, None),  # whole, only its line end left out
        (EVENT + "\n  \n", None),
    ],
)
def test_a_cut_last_json_line_is_one_quarantined_row(tmp_path, last, reason):
    path = tmp_path / "events.jsonl"
    path.write_text(f"{EVENT}\n{EVENT}\n{last}")
    good, bad = _ingested(path)
    if reason is None:
        assert good.height == 3 and bad.height == 0
        return
    assert good["_row"].to_list() == [1, 2] and bad["row"].to_list() == [3]
    assert bad["reason"][0].startswith(f"truncated: {reason}")


def test_a_json_lines_file_of_one_cut_line_is_refused(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(EVENT[:30])
    with pytest.raises(LandingError, match="its only line is not whole JSON and has no line end"):
        _ingested(path)


_CELLS = st.sampled_from(["", "a", "b,c", 'q"q', "x\ny", "x\r\ny"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_CELLS, min_size=1, max_size=5), max_size=10), st.integers(1, 9))
def test_fields_are_counted_as_a_csv_reader_splits_them_across_chunks(rows, chunk):
    """The byte count that tells a short row must agree with a real CSV parser everywhere."""
    import tempfile

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["h1", "h2", "h3"], *rows])
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as mp:
        mp.setattr("nightowl.warehouse.landing.RECORD_CHUNK", chunk)
        path = Path(folder) / "f.csv"
        path.write_text(buffer.getvalue())
        records, numbers, counts = record_fields(path, ",", 3, shortcut=False)
    expected = [len(r) for r in csv.reader(io.StringIO(buffer.getvalue(), newline=""))]
    assert records == len(expected)
    odd = {n: c for n, c in enumerate(expected) if c != 3}
    assert dict(zip(numbers.tolist(), counts.tolist(), strict=True)) == odd


# ---- paths are literal, links stay in, files still being copied wait


def test_brackets_in_the_data_root_and_file_names_are_not_globs(tmp_path):
    root = tmp_path / "data[x]"
    folder = root / "landing" / "events"
    folder.mkdir(parents=True)
    (folder / "events[1].csv").write_text("user_id,event_time,event_type\nu1,2026-11-19,view\n")
    (folder / "events[2].jsonl").write_text(EVENT + "\n")
    pl.DataFrame(
        {"user_id": ["u3"], "event_time": ["2026-11-19"], "event_type": ["view"]}
    ).write_parquet(folder / "events*[3].parquet")
    found = landing_files("events", SourceConfig(), date(2026, 11, 27), root, root)
    assert [f.name for f in found] == ["events*[3].parquet", "events[1].csv", "events[2].jsonl"]
    for file in found:
        good, bad = _ingested(file.path)
        assert good.height == 1 and bad.height == 0, file.name
    literal = SourceConfig(landing=str(folder / "events[1].csv"))
    assert [f.name for f in landing_files("events", literal, date(2026, 11, 27), root, root)] == [
        "events[1].csv"
    ]


def test_a_link_out_of_the_landing_folder_is_refused_without_reading_it(tmp_path, data_root):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:secret\n")
    folder = data_root / "landing" / "events"
    (folder / "events.csv").symlink_to(secret)
    (folder / "real.csv").write_text("user_id,event_time,event_type\nu1,2026-11-19,view\n")
    (folder / "alias.csv").symlink_to(folder / "real.csv")  # inside: fine
    found = {
        f.name: f
        for f in landing_files("events", SourceConfig(), date(2026, 11, 27), data_root, data_root)
    }
    assert found["events.csv"].problem == OUTSIDE_LINK
    assert found["alias.csv"].problem is None and found["real.csv"].problem is None
    with (
        pytest.raises(LandingError) as refused,
        open_landing(found["events.csv"], SourceConfig(), tmp_path),
    ):
        pass
    assert "root:x" not in str(refused.value) and "secret" not in str(refused.value)
    good, _ = _ingested(found["alias.csv"].path)
    assert good.height == 1


def test_files_still_being_copied_are_left_for_a_later_run(data_root):
    folder = data_root / "landing" / "events"
    for name in ("settled.csv", "fresh.csv", "2026-11-27.csv.part", "big.CSV.crdownload",
                 "x.csv._COPYING_", "y.tmp", ".hidden.csv"):  # fmt: skip
        (folder / name).write_text("x")
    now = 1_800_000_000.0
    os.utime(folder / "settled.csv", (now - 60, now - 60))
    os.utime(folder / "fresh.csv", (now - 3, now - 3))
    cfg = SourceConfig(settle_seconds=10)
    run = date(2026, 11, 27)
    assert _names(landing_files("events", cfg, run, data_root, data_root, now=now)) == [
        "settled.csv"
    ]
    waiting = {
        f.name: f.waiting
        for f in landing_files(
            "events", cfg, run, data_root, data_root, now=now, include_waiting=True
        )
    }
    assert waiting["settled.csv"] is None
    assert waiting["fresh.csv"] == "changed 3 s ago; waiting for it to settle (settle_seconds = 10)"
    assert waiting["big.CSV.crdownload"] == (
        "its name ends in .crdownload, so it is still being copied; waiting for the copy to finish"
    )
    assert set(waiting) == {"settled.csv", "fresh.csv", "2026-11-27.csv.part", "big.CSV.crdownload",
                            "x.csv._COPYING_", "y.tmp"}  # fmt: skip
    later = landing_files("events", cfg, run, data_root, data_root, now=now + 10)
    assert _names(later) == ["fresh.csv", "settled.csv"]
    assert _names(landing_files("events", SourceConfig(), run, data_root, data_root, now=now)) == [
        "fresh.csv", "settled.csv",
    ]  # fmt: skip
    everything = landing_files(
        "events", cfg, run, data_root, data_root, now=now, include_waiting=True
    )
    fresh = next(f for f in everything if f.name == "fresh.csv")
    with (
        pytest.raises(LandingError, match="waiting for it to settle"),
        open_landing(fresh, cfg, data_root),
    ):
        pass
