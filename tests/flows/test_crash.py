"""Crash anywhere: SIGKILL the nightly run at named points and at random moments, then rerun.

After every kill the published warehouse must still be whole (every partition agrees with its
manifest), a reader polling it throughout must never see a partition that is not, and the rerun
must end with exactly the tables a run that never crashed writes (content hashes compared).
The same holds when the disk fills up or a folder may not be written, and the run says so.
Two runs at once, or a run beside a backfill, write one set of tables.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from nightowl.demo.generate import generate_landing
from nightowl.warehouse.crash import ENV, POINTS
from nightowl.warehouse.query import run_query
from nightowl.warehouse.store import Warehouse
from tests.integrity import (
    contact_details_found,
    prefect_records,
    published_problems,
    published_state,
)

pytestmark = pytest.mark.e2e
END = date(2026, 11, 20)
NIGHT = END  # the night that is killed; the one before it ran cleanly
# Small enough that the night before trains a propensity champion, so tonight scores users.
CONFIG = """
[model]
horizon_days = 3
min_history_days = 4
snapshots = 2
snapshot_step_days = 2
min_data_in_leaf = 5
"""

# Named kills: each run is killed at the first of them it passes that no earlier run was killed
# at, whatever order the threads take them in, so each rerun gets further than the last.
NAMED = [
    "ingest-part:events/",  # a landing file half ingested
    "file-added:raw/events",  # its raw part in place, the ledger entry not yet
    "json-half:_ledger/events",  # mid-write of a ledger entry
    "json-half:warehouse/raw/events",  # mid-manifest of the raw partition
    "json-staged:_ledger/items",  # a whole ledger entry beside its final name
    "file-added:raw/feedback",
    "partition-staged:clean/events",  # mid-write of a clean partition: data, no manifest yet
    "json-half:warehouse/clean/events",  # mid-manifest of a clean partition
    "publish-swapped:clean/items",  # swapped in, the old one not yet deleted
    "publish-staged:clean/feedback",  # whole, not yet swapped in
    "publish-swapped:clean/market_prices",
    "partition-staged:features/user",
    "json-half:features/user",
    "json-half:predictions/feedback_scores",
    "partition-staged:predictions/recommendations",
    "publish-staged:predictions/user_scores",
    "partition-staged:reports/kpi_daily",
    "json-half:warehouse/reports/",
    "publish-staged:reports/20",  # the report page, whole, not yet swapped in
    "json-half:_state/runs",  # mid-write of the run record, everything else done
]
RANDOM_KILLS = 4
# Contact details people write into feedback, in the forms the redaction must catch; they land
# tonight beside the generator's own (it plants few at this size).
CONTACT_DETAILS = [
    "jane.doe+orders@example.co.uk", "TOM_SMITH99@Example.COM", "li.wei@mail.example.org",
    "amira dot k at example dot com", "olu (at) example (dot) io", "+44 7700 900123",
    "07700 900456", "+1 (415) 555-0134", "+49 30 12345678", "(020) 7946 0018",
    "+33 6 12 34 56 78", "+447700900789", "4111 1111 1111 1111", "5500-0000-0000-0004",
    "378282246310005", "GB82 WEST 1234 5698 7654 32",
]  # fmt: skip
PRELOAD = ["polars", "lightgbm", "sklearn.feature_extraction.text", "onnx", "onnxruntime", "duckdb"]


def _night(root: str, env: dict[str, str], log: str, command: list[str], bound: bool) -> None:
    """A `nightowl` command (default: run tonight), in a process forked from one that imported
    the heavy libraries already (its output to ``log``); ``bound``: held to file permissions."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    if bound:
        _bound_by_file_permissions()
    from nightowl.cli import main

    args = command or ["run", "--date", NIGHT.isoformat()]
    main([*args, "--data-root", root, "--config", str(Path(root) / "nightowl.toml")])


def _bound_by_file_permissions() -> None:
    """Make this process obey file modes, as any user but root does: root's effective
    capabilities to override them are dropped (before any thread starts; threads inherit)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    sets = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; capabilities 0-31, 32-63
    assert libc.capget(header, sets) == 0, os.strerror(ctypes.get_errno())
    dac_override, dac_read_search, fowner = 1, 2, 3
    sets[0] &= ~(1 << dac_override | 1 << dac_read_search | 1 << fowner)
    assert libc.capset(header, sets) == 0, os.strerror(ctypes.get_errno())


class Night:
    """One nightly run in its own process, which may be killed; ``out`` is what it printed."""

    def __init__(
        self, forks, root: Path, *command: str, bound: bool = False, logs: Path | None = None, **env
    ) -> None:
        self.log = (logs or root.parent) / f"{root.name}-{time.monotonic_ns()}.log"
        args = (str(root), env, str(self.log), list(command), bound)
        self.proc = forks.Process(target=_night, args=args)
        self.proc.start()

    def wait(self, timeout: float = 600) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            raise AssertionError(f"the run did not end in {timeout} s:\n{self.out[-3000:]}")
        return self.proc.exitcode

    @property
    def out(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Reader(threading.Thread):
    """Polls the warehouse while runs are killed; remembers anything unwhole it saw."""

    def __init__(self, wh: Warehouse) -> None:
        super().__init__(daemon=True)
        self.wh, self.seen, self.polls = wh, [], 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            # A partition swapped in while it is being read looks changed, not broken: only what
            # is still wrong on a second look counts.
            first = published_problems(self.wh, deep=False)
            if first and (again := set(first) & set(published_problems(self.wh, deep=False))):
                self.seen.extend(sorted(again))
            self.polls += 1
            time.sleep(0.2)


@pytest.fixture(scope="module")
def forks():
    """Processes forked from a server that imported the heavy libraries once (pointed at a real
    temporary Prefect API): a run starts in a moment instead of importing them all again.

    Prefect is not among them: each run imports it after pointing it at its data root, as the
    command line does.

    The server is this module's own, not the session's shared one: the runs here are killed
    mid-write, and the last test reads back every record the server holds."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # Task runs reach the server as events, through one worker per process that keeps the server
    # it started with: if the session's server is up in this process, its worker must go first,
    # or the flow run in this process (last_night) would record its task runs there.
    EventsWorker.drain_all()
    with prefect_test_harness(server_startup_timeout=180):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the fork server inherits it
        try:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            yield context
        finally:
            os.environ.pop("PREFECT_API_URL")


@pytest.fixture(scope="module")
def last_night(forks, tmp_path_factory) -> Path:
    """A data root where the night before ran cleanly, with tonight's files just landed."""
    from nightowl.flows.nightly import nightly

    root = tmp_path_factory.mktemp("crash") / "base"
    landing = root / "landing"
    generate_landing(landing, users=300, items=40, days=14, seed=5, end_date=END)
    (root / "nightowl.toml").write_text(CONFIG)
    tonight = [p for p in landing.glob(f"*/{END.isoformat()}*") if p.is_file()]
    aside = root.parent / "tonight"
    for path in tonight:
        (aside / path.parent.name).mkdir(parents=True, exist_ok=True)
        path.rename(aside / path.parent.name / path.name)
    night = nightly(
        run_date=NIGHT - timedelta(days=1),
        data_root=str(root),
        config=str(root / "nightowl.toml"),
        return_state=True,
    )
    assert night.is_completed()
    assert (root / "warehouse/predictions/user_scores").exists()
    for path in aside.glob("*/*"):
        path.rename(landing / path.parent.name / path.name)
    _land_contact_details(landing / "feedback" / f"{END.isoformat()}-contact.jsonl")
    return root


def _land_contact_details(path: Path) -> None:
    """Feedback of every channel whose text (and sometimes title) gives a contact detail."""
    channels = ["support", "review", "app_store", "survey"]
    rows = [
        {
            "feedback_id": f"contact-{n:02d}", "user_id": f"u{n + 1:06d}", "item_id": None,
            "rating": [None, 2, 4, 5][n % 4], "channel": channels[n % 4],
            "title": f"Reach me at {detail}" if n % 3 == 0 else "Order question",
            "text": f"My parcel never came, please help. Contact me on {detail} today.",
            "created_at": f"{END.isoformat()}T{8 + n % 12:02d}:15:00+00:00",
        }
        for n, detail in enumerate(CONTACT_DETAILS)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def clean_run(last_night, forks) -> tuple[dict[str, str], float]:
    """What tonight's run publishes when nothing goes wrong, and how long it takes."""
    root = last_night.parent / "clean"
    shutil.copytree(last_night, root)
    started = time.monotonic()
    night = Night(forks, root)
    assert night.wait() == 0, night.out
    return published_state(Warehouse(root)), time.monotonic() - started


def _rerun_matches(root: Path, forks, expected: dict[str, str]) -> None:
    night = Night(forks, root)
    assert night.wait() == 0, night.out[-5000:]
    assert "Traceback" not in night.out
    state = published_state(Warehouse(root))
    differs = sorted(k for k in expected.keys() | state.keys() if expected.get(k) != state.get(k))
    assert not differs, f"after the crashes these differ from a clean run: {differs}"


def test_named_crash_points_are_all_real():
    assert {spec.split(":")[0] for spec in NAMED} == set(POINTS)


def test_kills_at_every_named_point_leave_a_whole_warehouse_and_reruns_converge(
    last_night, clean_run, forks
):
    expected, _ = clean_run
    root = last_night.parent / "named"
    shutil.copytree(last_night, root)
    wh = Warehouse(root)
    reader = Reader(wh)
    reader.start()
    try:
        left = list(NAMED)
        while left:  # each run is killed at the first point it passes that no run was killed at
            night = Night(forks, root, **{ENV: "|".join(left)})
            assert night.wait() == -signal.SIGKILL, f"not killed at any of {left}:\n{night.out}"
            [spec] = re.findall(r"^crash point (.+)$", night.out, re.MULTILINE)
            left.remove(spec)
            assert published_problems(wh) == [], f"after a kill at {spec}"
    finally:
        reader.stop.set()
        reader.join()
    assert reader.polls > len(NAMED)
    assert reader.seen == []
    _rerun_matches(root, forks, expected)


def test_kills_at_random_moments_leave_a_whole_warehouse_and_reruns_converge(
    last_night, clean_run, forks
):
    expected, seconds = clean_run
    root = last_night.parent / "random"
    shutil.copytree(last_night, root)
    wh = Warehouse(root)
    rng = random.Random(20261202)
    kills = 0
    for _ in range(RANDOM_KILLS):
        night = Night(forks, root)
        # Anywhere from start-up to past the middle of a clean run: each rerun is quicker (the
        # steps that finished are cached), so a later moment would mostly find it done (a rerun
        # converging, but no kill), the more so when the clean run was timed on a busy machine.
        night.proc.join(rng.uniform(0.1, 0.6) * seconds)
        if night.proc.exitcode is None:
            night.proc.kill()
        kills += night.wait() == -signal.SIGKILL
        assert published_problems(wh) == []
    assert kills >= RANDOM_KILLS - 1
    _rerun_matches(root, forks, expected)


def _converged(root: Path, expected: dict[str, str]) -> None:
    state = published_state(Warehouse(root))
    differs = sorted(k for k in expected.keys() | state.keys() if expected.get(k) != state.get(k))
    assert not differs, f"these differ from a clean run: {differs}"
    assert published_problems(Warehouse(root)) == []


def test_two_runs_for_the_same_date_at_once_write_one_set_of_tables(last_night, clean_run, forks):
    expected, _ = clean_run
    root = last_night.parent / "twice"
    shutil.copytree(last_night, root)
    nights = [Night(forks, root), Night(forks, root)]
    codes = [night.wait() for night in nights]
    assert codes == [0, 0], "\n".join(night.out[-3000:] for night in nights)
    for night in nights:
        assert "Traceback" not in night.out
    _converged(root, expected)
    ledger = Warehouse(root).root / "_ledger"
    names = [p.name for p in ledger.glob("*/*.json")]
    assert len(names) == len(set(names))  # each landing file ingested once


def test_a_run_beside_a_backfill_of_the_nights_before_it(last_night, clean_run, forks):
    expected, _ = clean_run
    root = last_night.parent / "beside"
    shutil.copytree(last_night, root)
    first = (NIGHT - timedelta(days=3)).isoformat()
    before = (NIGHT - timedelta(days=1)).isoformat()
    backfill = Night(forks, root, "backfill", "--start", first, "--end", before, "--force")
    run = Night(forks, root)
    assert [run.wait(), backfill.wait()] == [0, 0], backfill.out[-3000:] + run.out[-3000:]
    # The backfill recomputed the nights before (forced); tonight's tables are as a lone run's.
    tonight = {NIGHT.isoformat(), (NIGHT + timedelta(days=1)).isoformat()}
    tonight_only = {k: v for k, v in expected.items() if k.rsplit("/", 1)[-1] in tonight}
    state = published_state(Warehouse(root))
    assert {k: state.get(k) for k in tonight_only} == tonight_only
    assert published_problems(Warehouse(root)) == []


# ---- resource faults --------------------------------------------------------------------------
# Nothing retried (a full disk stays full here), and no free-space floor unless a test sets one.
NO_RETRIES = {"NIGHTOWL_RUN__IO_RETRIES": "0", "NIGHTOWL_RUN__MIN_FREE_MB": "0"}
PAGE = 4096


def _disk_bytes(root: Path) -> int:
    """What the files under ``root`` take on a tmpfs: whole pages."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in root.rglob("*") if p.is_file())


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@contextmanager
def _small_disk(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where``: a disk that fills up (mounting needs root;
    CI runs as root and sets NIGHTOWL_REQUIRE_MOUNT=1, so there it cannot be skipped)."""
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "nightowl-test", str(where)]
    done = subprocess.run(mount, capture_output=True, text=True) if os.geteuid() == 0 else None
    if done is None or done.returncode:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip() if done else 'not root'}"
        if os.environ.get("NIGHTOWL_REQUIRE_MOUNT"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=False)


def test_a_full_disk_stops_the_run_clearly_publishes_nothing_partial_and_a_rerun_converges(
    last_night, clean_run, forks
):
    expected, _ = clean_run
    had = _disk_bytes(last_night)
    writes = _disk_bytes(last_night.parent / "clean") - had
    disk = last_night.parent / "small-disk"
    with _small_disk(disk, had + writes // 2) as mounted:
        root = mounted / "data"
        shutil.copytree(last_night, root)
        before = _files(root)

        # Below the free-space floor, a run does not start.
        refused = Night(forks, root, logs=last_night.parent)
        assert refused.wait() == 1, refused.out[-3000:]
        assert "data root: only" in refused.out and "free on the disk of" in refused.out
        assert "Traceback" not in refused.out
        assert _files(root) == before

        # Without the floor it starts, and the disk fills up under it.
        full = Night(forks, root, logs=last_night.parent, **NO_RETRIES)
        assert full.wait() == 1, full.out[-3000:]
        said = full.out.rpartition(f"nightly run for {NIGHT} failed: ")[2]
        assert "No space left on device" in said, full.out[-3000:]
        assert published_problems(Warehouse(root)) == []

        subprocess.run(["mount", "-o", "remount,size=1g", str(mounted)], check=True)  # room made
        _rerun_matches(root, forks, expected)


def test_a_read_only_data_root_stops_the_run_before_it_writes_anything(last_night, forks):
    root = last_night.parent / "read-only"
    shutil.copytree(last_night, root)
    folders = [p for p in [root, *root.rglob("*")] if p.is_dir()]
    for folder in folders:
        folder.chmod(0o555)
    before = _files(root)
    landing = root / "landing" / "events"
    try:
        night = Night(forks, root, bound=True)
        assert night.wait() == 1, night.out[-3000:]
        generate = Night(forks, root, "generate", "--out", str(landing), "--days", "2", bound=True)
        assert generate.wait() == 1, generate.out[-3000:]
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert f"data root: cannot write to {root}: permission denied" in night.out
    assert f"nightowl: Permission denied: {landing}" in generate.out  # any command: one line
    for out in (night.out, generate.out):
        assert "Traceback" not in out and len(out.strip().splitlines()) <= 3, out
    assert _files(root) == before


def test_a_table_folder_it_may_not_write_fails_that_step_only_and_a_rerun_converges(
    last_night, clean_run, forks
):
    expected, _ = clean_run
    root = last_night.parent / "one-folder-read-only"
    shutil.copytree(last_night, root)
    scores = Warehouse(root).table_dir("predictions", "user_scores")
    scores.chmod(0o555)
    try:
        night = Night(forks, root, bound=True, **NO_RETRIES)
        assert night.wait() == 1, night.out[-3000:]
    finally:
        scores.chmod(0o755)
    assert "score: " in night.out and "Permission denied" in night.out
    assert str(scores) in night.out  # the folder is named
    wh = Warehouse(root)
    assert published_problems(wh) == []
    published = published_state(wh)
    # What does not depend on the scores was written as a clean run writes it.
    assert (
        published["features/user/" + (NIGHT + timedelta(days=1)).isoformat()]
        == expected["features/user/" + (NIGHT + timedelta(days=1)).isoformat()]
    )
    _rerun_matches(root, forks, expected)


# ---- what no output may hold --------------------------------------------------------------------
def test_no_contact_detail_from_feedback_reaches_any_output(last_night, clean_run):
    planted = pl.read_parquet(last_night / "landing/_truth/planted_pii.parquet")["value"]
    details = [*planted, *CONTACT_DETAILS]
    wh = Warehouse(last_night.parent / "clean")
    raw = pl.concat(pl.read_parquet(p) for p in wh.table_dir("raw", "feedback").rglob("*.parquet"))
    kept = "\n".join(raw["text"].drop_nulls())
    assert all(d in kept for d in CONTACT_DETAILS)  # raw keeps what was given; the rest may not
    scored = "select count(*) from feedback_scores where feedback_id like 'contact-%'"
    assert run_query(wh, scored).item() == len(CONTACT_DETAILS)
    assert contact_details_found(wh, details) == []
    held = prefect_records()  # logs and artifacts: the support queue shows its top tickets
    assert "support-queue" in held
    assert [d for d in details if d in held] == []
