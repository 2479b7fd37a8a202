"""Finding landing files: which arrive for a run date, formats, gzip, encodings."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import SourceConfig
from warehouse.landing import landing_files, scanned_text


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
        mp.setattr("warehouse.landing.SCAN_CHUNK", chunk)
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
