"""Atomic publish, manifests, lineage and temp-file hygiene of the Parquet warehouse."""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl
import pytest

from nightowl.warehouse.manifest import MANIFEST, InputRef, combined_hash, file_sha256
from nightowl.warehouse.store import TMP_PREFIX, Warehouse
from nightowl.warehouse.tables import CLEAN_EVENTS, QUARANTINE, RAW
from tests.warehouse.test_tables import frame_of

P = {"dt": "2026-11-27"}


def events(*rows: int) -> pl.DataFrame:
    """Clean events with these source rows (their other columns null)."""
    return frame_of(CLEAN_EVENTS, source_row=list(rows))


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path, code_version="1.0+abc")


def test_a_published_partition_has_a_manifest_with_rows_hash_schema_and_lineage(wh):
    frame = frame_of(CLEAN_EVENTS, event_id=["x", "y", None], source_row=[1, 2, 3])
    ref = InputRef(kind="landing", name="landing/events/a.csv", content_hash="f00")
    m = wh.write_partition("clean", "events", P, frame, inputs=[ref], stats={"rejected": 1})
    folder = wh.partition_dir("clean", "events", P)
    (part,) = folder.glob("*.parquet")
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, part.name]
    assert part.name == f"part-{m.files[0].sha256[:16]}.parquet"  # named after its content
    columns = {name: str(dtype) for name, dtype in CLEAN_EVENTS.schema.items()}
    assert (m.rows, m.columns, m.code_version) == (3, columns, "1.0+abc")
    assert m.files[0].sha256 == file_sha256(part)
    assert m.content_hash == combined_hash([m.files[0].sha256])
    assert m.inputs == [ref] and m.stats == {"rejected": 1}
    assert wh.manifest("clean", "events", P) == m


def test_republishing_replaces_the_partition_whole(wh):
    wh.write_partition("clean", "events", P, events(1, 2))
    wh.write_partition("clean", "events", P, events(7))
    folder = wh.partition_dir("clean", "events", P)
    assert pl.read_parquet(folder / "*.parquet")["source_row"].to_list() == [7]
    assert wh.manifest("clean", "events", P).rows == 1
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_same_rows_give_the_same_content_hash(wh):
    frame = frame_of(CLEAN_EVENTS, event_id=["x"] * 100, source_row=list(range(100)))
    first = wh.write_partition("clean", "events", P, frame).content_hash
    assert wh.write_partition("clean", "events", P, frame).content_hash == first
    assert wh.write_partition("clean", "events", P, frame.reverse()).content_hash != first


def test_a_failed_write_leaves_the_old_partition_and_no_trace(wh, monkeypatch):
    wh.write_partition("clean", "events", P, events(1))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        wh.write_partition("clean", "events", P, events(2))
    folder = wh.partition_dir("clean", "events", P)
    assert pl.read_parquet(folder / "*.parquet")["source_row"].to_list() == [1]
    assert [p.name for p in folder.parent.iterdir()] == ["dt=2026-11-27"]


def test_a_crash_mid_write_leaves_nothing_in_the_table_folder(wh, monkeypatch):
    wh.write_partition("clean", "events", P, events(1))
    import nightowl.warehouse.store as store

    def crash(staging, target):
        raise KeyboardInterrupt  # the process dies between writing and publishing

    monkeypatch.setattr(store, "_swap_in", crash)
    with pytest.raises(KeyboardInterrupt):
        wh.write_partition("clean", "events", {"dt": "2026-11-28"}, events(2))
    assert [p.name for p in wh.table_dir("clean", "events").iterdir()] == ["dt=2026-11-27"]
    assert pl.scan_parquet(wh.glob("clean", "events")).collect()["source_row"].to_list() == [1]


def test_sweep_removes_old_temporaries_only(wh):
    old, new = wh.tmp_dir / f"{TMP_PREFIX}old", wh.tmp_dir / f"{TMP_PREFIX}new"
    old.mkdir(parents=True)
    new.mkdir()
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert wh.sweep_temporaries(older_than_s=3600) == 1
    assert not old.exists() and new.exists()


def test_accumulating_partitions_seal_a_manifest_of_their_files(wh, tmp_path):
    for name, rows in (("a.parquet", [1, 2]), ("b.parquet", [3])):
        staged = tmp_path / f"staged-{name}"
        frame_of(RAW["events"], _row=rows).write_parquet(staged)
        wh.add_file("raw", "events", P, name, staged)
    m = wh.seal_partition("raw", "events", P)
    assert [(f.name, f.rows) for f in m.files] == [("a.parquet", 2), ("b.parquet", 1)]
    assert m.rows == 3


def test_tables_lists_quarantine_by_source_and_stage(wh):
    rejected = frame_of(QUARANTINE[("events", "clean")], reason=["x"])
    wh.write_partition("quarantine", "source=events/stage=clean", P, rejected)
    wh.write_partition("clean", "events", P, events(1))
    assert list(wh.tables()) == [
        ("quarantine", "source=events/stage=clean"),
        ("clean", "events"),
    ]


@pytest.mark.parametrize(
    "partition",
    [{"dt": "../../etc"}, {"dt": "a/b"}, {"dt": ".hidden"}, {"dt": ""}, {"d/t": "x"},
     {"dt": "x=y"}, {"dt": "a\\b"}, {"dt": "a\0b"}, {"..": "x"}],
)  # fmt: skip
def test_a_partition_value_that_could_leave_its_table_is_refused(wh, partition):
    with pytest.raises(ValueError, match="not a partition key or value"):
        wh.write_partition("clean", "events", partition, events(1))
    assert not list(wh.data_root.rglob("*.parquet"))


def test_a_writable_data_root_with_room_has_no_storage_problem(wh):
    assert wh.storage_problem(min_free_bytes=1) is None
    assert not list(wh.data_root.rglob(".nightowl-probe-*"))  # the probe cleans up


def test_too_little_free_disk_is_a_storage_problem_naming_the_figures(wh):
    problem = wh.storage_problem(min_free_bytes=1 << 50)
    assert problem.startswith("only ") and "free on the disk of" in problem
    assert "1024.0 TB" in problem and "[run] min_free_mb" in problem


def test_a_data_root_not_made_yet_is_checked_where_it_would_be_made(tmp_path):
    wh = Warehouse(tmp_path / "new" / "data")
    assert wh.storage_problem(min_free_bytes=1) is None
    assert not (tmp_path / "new").exists()


MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:50 / /data rw,nosuid - fuse.s3fs s3fs rw,user_id=0
41 40 0:51 / /data/shared rw - nfs4 fs-1.efs.example:/ rw
42 22 0:52 / /mnt/my\\040disk rw - fuse mountpoint-s3 rw
43 22 0:53 / /data2 rw - xfs /dev/sdb1 rw
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/warehouse", ("fuse.s3fs", "s3fs")),
        ("/data/shared/night", ("nfs4", "fs-1.efs.example:/")),
        ("/data2/night", ("xfs", "/dev/sdb1")),  # not /data's: a name that merely starts alike
        ("/mnt/my disk/night", ("fuse", "mountpoint-s3")),
        ("/home/owl", ("ext4", "/dev/sda1")),
    ],
)
def test_the_file_system_holding_a_path_is_its_deepest_mount(path, expected):
    from nightowl.warehouse.store import file_system_of

    assert file_system_of(Path(path), MOUNTINFO) == expected


def test_a_data_root_on_an_object_store_mount_is_refused_naming_it(wh, monkeypatch):
    import nightowl.warehouse.store as store

    # No s3fs here: the mount table says the data root is on one, as it would on such a machine.
    line = f"40 22 0:50 / {wh.data_root} rw - fuse.s3fs s3fs rw\n"
    monkeypatch.setattr(store, "_mountinfo", lambda: MOUNTINFO + line)
    problem = wh.storage_problem(min_free_bytes=1)
    assert problem.startswith(f"{wh.data_root} is on s3fs (fuse.s3fs), an object-store mount")
    assert "atomic rename" in problem
    monkeypatch.setattr(store, "_mountinfo", lambda: MOUNTINFO)
    assert wh.storage_problem(min_free_bytes=1) is None
