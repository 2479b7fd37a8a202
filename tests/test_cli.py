"""The ``nightowl`` command: help with examples, generate, query formats, tables, clear errors."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest
from typer.testing import CliRunner

from nightowl.cli import app
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest.units import clean_source, ingest_source
from nightowl.warehouse.store import Warehouse

runner = CliRunner()
COMMANDS = [
    "generate", "run", "backfill", "demo", "train", "models", "query", "tables", "server", "serve",
    "evaluate",
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"nightowl {command}" in result.output


def test_top_level_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and all(c in result.output for c in COMMANDS)


@pytest.fixture
def warehouse_root(data_root):
    (data_root / "landing/events/2026-11-27.csv").write_text(
        "user_id,event_time,event_type\nu1,2026-11-27T10:00:00Z,view\nu2,2026-11-27T11:00:00Z,view\n"
        "u3,later,view\n"
    )
    wh = Warehouse(data_root)
    ingest_source(wh, "events", SourceConfig(), date(2026, 11, 27), data_root)
    clean_source(wh, "events", SourceConfig(), date(2026, 11, 27), 24)
    return data_root


def test_query_prints_a_table(warehouse_root):
    sql = "select user_id from events order by 1"
    result = runner.invoke(app, ["query", sql, "--data-root", str(warehouse_root)])
    assert result.exit_code == 0, result.output
    assert "u1" in result.output and "u2" in result.output and "2 rows" in result.output


@pytest.mark.parametrize("suffix", ["csv", "json", "parquet"])
def test_query_writes_files_by_extension(warehouse_root, tmp_path, suffix):
    out = tmp_path / f"out.{suffix}"
    sql = "select user_id from events order by 1"
    result = runner.invoke(app, ["query", sql, "-o", str(out), "--data-root", str(warehouse_root)])
    assert result.exit_code == 0, result.output
    if suffix == "csv":
        assert out.read_text().splitlines() == ["user_id", "u1", "u2"]
    elif suffix == "json":
        assert [json.loads(x)["user_id"] for x in out.read_text().splitlines()] == ["u1", "u2"]
    else:
        assert pl.read_parquet(out)["user_id"].to_list() == ["u1", "u2"]


def test_query_csv_to_stdout(warehouse_root):
    args = ["query", "select count(*) n from quarantine", "--format", "csv"]
    result = runner.invoke(app, [*args, "--data-root", str(warehouse_root)])
    assert result.exit_code == 0 and result.output.splitlines() == ["n", "1"]


def test_query_refuses_writes_with_a_clear_message(warehouse_root):
    result = runner.invoke(app, ["query", "drop view events", "--data-root", str(warehouse_root)])
    assert result.exit_code == 2 and "read-only" in result.output


def test_query_of_an_unknown_table_says_so(warehouse_root):
    result = runner.invoke(app, ["query", "select * from nope", "--data-root", str(warehouse_root)])
    assert result.exit_code == 1 and "nope" in result.output and "Traceback" not in result.output


def test_query_prints_values_literally_not_as_markup_or_emoji(warehouse_root):
    sql = "select 'root:x:0:0' a, '[red]x[/]' b, ':thumbs_up:' c"
    result = runner.invoke(app, ["query", sql, "--data-root", str(warehouse_root)])
    assert result.exit_code == 0, result.output
    assert "root:x:0:0" in result.output and "[red]x[/]" in result.output
    assert ":thumbs_up:" in result.output and "❌" not in result.output


def test_query_stops_at_its_timeout_in_one_line(warehouse_root):
    sql = "select count(*) from range(10000000000000)"
    args = ["query", sql, "--timeout", "0.2", "--data-root", str(warehouse_root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.output.startswith("query stopped after 0.2 s (--timeout);")
    assert len(result.output.strip().splitlines()) == 1


def test_query_of_a_table_not_made_yet_says_which_step_makes_it(warehouse_root):
    args = ["query", "select * from user_scores", "--data-root", str(warehouse_root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "user_scores has no partition yet: the score step" in result.output
    assert "nightowl models" in result.output and "Catalog Error" not in result.output


def test_tables_lists_partitions_and_rows(warehouse_root):
    result = runner.invoke(app, ["tables", "--data-root", str(warehouse_root)])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if "clean" in x and "events" in x)
    assert "2026-11-27" in line and " 2 " in line


def test_generate_writes_landing_files(tmp_path):
    args = ["generate", "--out", str(tmp_path / "landing"), "--users", "50", "--items", "20",
            "--days", "3", "--end-date", "2026-11-27"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "landing/events/2026-11-27.csv").exists()
    assert not (tmp_path / "landing/events/2026-11-28.csv").exists()


def test_config_errors_are_shown_verbatim(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text('[sources.events]\ntimezone = "Mars/Base"\n')
    result = runner.invoke(app, ["tables", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "[sources" not in result.output and "sources.events.timezone" in result.output


def test_a_bad_date_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["run", "--date", "27/11/2026", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "expected YYYY-MM-DD" in result.output


def test_models_with_an_empty_registry_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["models", "--data-root", str(tmp_path)])
    assert result.exit_code == 0 and "nightowl train" in result.output


@pytest.mark.e2e
def test_run_keeps_prefect_state_and_results_under_the_data_root(tmp_path):
    """With no Prefect settings in the environment, nothing lands in ~/.prefect."""
    import os
    import subprocess
    import sys

    root, home = tmp_path / "data", tmp_path / "home"
    runner.invoke(app, ["generate", "--data-root", str(root), "--users", "30", "--items", "12",
                        "--days", "2", "--end-date", "2026-11-20"])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "nightowl", "run", "--date", "2026-11-20", "--data-root", str(root)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert any((root / "_state" / "results").iterdir())  # the step cache, under the data root
    assert not (home / ".prefect").exists()


def test_the_demo_backfills_nights_whose_outcomes_are_in_by_its_last_night(tmp_path):
    from datetime import timedelta

    from nightowl.cli import backfilled_nights
    from nightowl.flows.settings import load_settings

    settings = load_settings(None, data_root=str(tmp_path))
    first_run, end = date(2026, 12, 5), date(2026, 12, 6)
    nights = backfilled_nights(settings, first_run, end - timedelta(days=129), 2)
    assert nights == [date(2026, 10, 30), date(2026, 10, 31)]
    # The last night (as of Dec 7) judges their 30-day outcomes: served Oct 31 and Nov 1.
    assert all(n + timedelta(days=1 + 30) <= end + timedelta(days=1) for n in nights)
    # Too little history before them for a first training: the demo runs without them.
    assert backfilled_nights(settings, first_run, end - timedelta(days=90), 2) == []


def test_serve_can_be_stopped_by_sigint_even_when_started_with_it_ignored():
    """A background job of a script starts with SIGINT ignored; serve takes it back."""
    import signal
    import subprocess
    import sys

    code = (
        "import signal, time\n"
        "from nightowl.cli import _stoppable_by_interrupt\n"
        "_stoppable_by_interrupt()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) != 0  # stopped by the interrupt, not by the end of its sleep
