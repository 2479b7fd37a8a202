"""End to end against a real temporary Prefect API: generate → run two dates → query → rerun."""

from __future__ import annotations

import re
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nightowl.cli import app
from nightowl.schemas.landing import SOURCES
from nightowl.tasks.models.lifecycle import rule_version
from nightowl.warehouse.manifest import file_sha256
from nightowl.warehouse.query import run_query
from nightowl.warehouse.registry import Registry
from nightowl.warehouse.store import Warehouse
from tests.integrity import prefect_records
from tests.landings import landing
from tests.tasks.behaviour.test_units import END as EVALUATED_TO
from tests.tasks.behaviour.test_units import build_warehouse
from tests.webhook import webhook

pytestmark = pytest.mark.e2e
END = date(2026, 11, 20)


def _task_states(flow_run_id, expected: int = 31) -> dict[str, str]:
    """Final state per data step run (ingest, clean), as the UI shows them; asserts that the checks
    and the run record completed. Task states reach the API a moment after the flow returns, so
    this waits until every run has a final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(done) == expected or time.monotonic() > deadline:
                states = {run.name: run.state.name for run in runs if run.state is not None}
                # Checks, the run record and the report's artifacts run every time (they read,
                # and write no data), and model health (it finds what changed itself).
                every_time = ("record-run", "check-", "report-artifacts", "model-health")
                always = [n for n in states if n.startswith(every_time)]
                assert {states.pop(n) for n in always} == {"Completed"}
                assert len(always) == 8
                return states
            time.sleep(0.2)


def _own_runs(root: Path) -> list:
    """The ids of the flow runs for the data root ``root``: the test's own, on the Prefect server
    the test session shares."""
    from prefect.client.orchestration import get_client

    def ours(run) -> bool:
        given = (run.parameters or {}).get("data_root")
        return given is not None and Path(given).resolve() == Path(root).resolve()

    with get_client(sync_client=True) as client:
        runs = _every(client.read_flow_runs)
    ids = [run.id for run in runs if ours(run)]
    assert ids, f"no flow run for {root}"
    return ids


def _artifacts(key: str, root: Path) -> list:
    """The artifacts under ``key`` of the test's own flow runs (for ``root``), newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    runs = ArtifactFilterFlowRunId(any_=_own_runs(root))
    with get_client(sync_client=True) as client:
        return _every(
            client.read_artifacts,
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=runs),
            sort=ArtifactSort.CREATED_DESC,
        )


def _own_records(root: Path) -> str:
    """Every log line, artifact, flow and task run the API holds of the test's own flow runs (for
    ``root``), as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    ids = _own_runs(root)
    runs = FlowRunFilter(id=FlowRunFilterId(any_=ids))
    artifacts = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
    logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
    with get_client(sync_client=True) as client:
        held = [
            *_every(client.read_flow_runs, flow_run_filter=runs),
            *_every(client.read_task_runs, flow_run_filter=runs),
            *_every(client.read_artifacts, artifact_filter=artifacts),
            *_every(client.read_logs, log_filter=logs),
        ]
    return "\n".join(item.model_dump_json() for item in held)


def _every(read, page: int = 200, **filters) -> list:
    """All that a paged ``client.read_*`` returns, page after page."""
    items: list = []
    while batch := read(**filters, limit=page, offset=len(items)):
        items += batch
    return items


def _hashes(wh: Warehouse) -> dict[str, str]:
    return {
        f"{layer}/{table}/{'/'.join(m.partition.values())}": m.content_hash
        for layer, table in wh.tables()
        for m in wh.manifests(layer, table)
        if layer != "raw"
    }


def test_generate_run_two_dates_query_and_rerun(prefect_api, tmp_path: Path):
    from nightowl.flows.nightly import nightly

    root = tmp_path / "data"
    landing(root / "landing", users=400, items=60, days=8, seed=3, end_date=END)
    wh = Warehouse(root)

    first = nightly(run_date=date(2026, 11, 19), data_root=str(root), return_state=True)
    assert first.is_completed()
    # A malformed file arrives with the next day's drop: its bad rows go to quarantine.
    (root / "landing/events/2026-11-20-manual.csv").write_text(
        "user_id,event_time,event_type,item_id,quantity\n"
        "u1,2026-11-20T08:00:00Z,view,i0001,1\n"
        "u2,not a time,view,i0001,1\n"
        "u3,2026-11-20T09:00:00Z,purchase,i0002,-5\n"
    )
    result = CliRunner().invoke(app, ["run", "--date", "2026-11-20", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "ERROR" not in result.output

    counts = run_query(wh, "select event_type, count(*) n from events group by 1")
    assert {"view", "purchase"} <= set(counts["event_type"])
    clean_rows = sum(m.rows for m in wh.manifests("clean", "events"))
    assert counts["n"].sum() == clean_rows

    manual = run_query(
        wh, "select row, reason from quarantine where file = '2026-11-20-manual.csv' order by row"
    )
    assert manual.rows() == [
        (2, "event_time: expected a timestamp (ISO 8601, e.g. 2026-11-27T14:03:00+00:00)"),
        (3, "quantity: must be ≥ 1"),
    ]
    ledger = run_query(
        wh, "select count(*) files, sum(rows_read) r, sum(rows_accepted) a, "
        "sum(rows_quarantined) q from ingest_ledger"
    ).row(0)  # fmt: skip
    distinct_files = {
        file_sha256(p) for s in SOURCES for p in (root / "landing" / s).iterdir() if p.is_file()
    }
    assert ledger[0] == len(distinct_files)  # identical files (same hash) are ingested once
    assert ledger[1] == ledger[2] + ledger[3]
    rejected = run_query(wh, "select count(*) from quarantine where stage = 'ingest'").item()
    assert rejected == ledger[3]

    history = _artifacts("nightly-steps", root)
    assert len(history) >= 2  # one per run, under one key: the UI shows the history
    latest = max(history, key=lambda a: a.created)
    assert "ingest-events" in str(latest.data) and "clean-events" in str(latest.data)
    summary = _artifacts("nightly-summary", root)[0]
    assert "nightly run for 2026-11-20" in summary.description

    before = _hashes(wh)
    again = nightly(run_date=date(2026, 11, 20), data_root=str(root), return_state=True)
    assert again.is_completed()
    assert _hashes(wh) == before
    states = _task_states(again.state_details.flow_run_id)
    # Training is never cached (it decides from the registry whether it is due); all else is.
    trained = ("train-propensity", "train-demand", "train-sentiment", "train-recommender")
    assert {states.pop(name) for name in trained} == {"Completed"}
    assert len(states) == 19 and set(states.values()) == {"Cached"}, states


def test_a_cached_step_whose_output_was_deleted_recomputes(prefect_api, tmp_path: Path):
    from nightowl.flows.nightly import nightly

    root = tmp_path / "data"
    landing(root / "landing", users=200, items=30, days=3, seed=5, end_date=END)
    wh = Warehouse(root)
    assert nightly(run_date=END, data_root=str(root), return_state=True).is_completed()
    before = _hashes(wh)
    gone = wh.partition_dir("clean", "feedback", {"dt": END.isoformat()})
    for path in gone.iterdir():
        path.unlink()
    gone.rmdir()
    state = nightly(run_date=END, data_root=str(root), return_state=True)
    states = _task_states(state.state_details.flow_run_id)
    assert states.pop("clean-feedback") == "Completed"
    assert states.pop("train-propensity") == "Completed"  # never cached
    assert states.pop("train-demand") == states.pop("train-sentiment") == "Completed"
    assert states.pop("train-recommender") == "Completed"
    assert set(states.values()) == {"Cached"}  # recommend among them: it reads no feedback
    assert _hashes(wh) == before


def test_an_unreadable_file_fails_the_run_naming_it_and_a_fix_recovers(prefect_api, tmp_path):
    root = tmp_path / "data"
    bad = root / "landing/events/2026-11-20.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("user_id,event_type\nu1,view\n")
    args = ["run", "--date", "2026-11-20", "--data-root", str(root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert str(bad) in result.output and "[sources.events.columns]" in result.output
    bad.write_text("user_id,event_type,event_time\nu1,view,2026-11-20T10:00:00Z\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert run_query(Warehouse(root), "select user_id from events").rows() == [("u1",)]


def test_force_steps_recompute_the_named_steps_and_their_downstream(prefect_api, tmp_path):
    from nightowl.flows.nightly import nightly

    root = tmp_path / "data"
    landing(root / "landing", users=100, items=20, days=2, seed=9, end_date=END)
    assert nightly(run_date=END, data_root=str(root), return_state=True).is_completed()
    state = nightly(
        run_date=END, data_root=str(root), force_steps=["ingest-events"], return_state=True
    )
    states = _task_states(state.state_details.flow_run_id)
    ran = {name for name, s in states.items() if s == "Completed"}
    model_steps = {"features-user", "train-propensity", "score-users"}  # events feed them
    model_steps |= {"price-position", "train-demand", "forecast"}
    model_steps |= {"train-sentiment", "support-queue"}  # never cached; reads user_scores
    model_steps |= {"train-recommender", "recommend", "report"}
    assert ran == {"ingest-events", "clean-events"} | model_steps
    assert {s for name, s in states.items() if name not in ran} == {"Cached"}


def test_backfill_runs_each_date_once_and_resumes(prefect_api, tmp_path):
    root = tmp_path / "data"
    landing(root / "landing", users=100, items=20, days=4, seed=2, end_date=END)
    args = ["backfill", "--start", "2026-11-18", "--end", "2026-11-20", "--data-root", str(root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 date(s) to run, 0 already complete" in result.output
    assert re.search(r"^dates .* 3/3 ", result.output, re.M)  # the progress bar, at its end
    wh = Warehouse(root)
    assert all(wh.completed_run(f"2026-11-{d}") for d in (18, 19, 20))
    assert (
        run_query(wh, "select min(dt), max(dt) from events").row(0)[1].isoformat() == "2026-11-20"
    )

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 date(s) to run, 3 already complete" in again.output
    assert "nightly run for" not in again.output

    (root / "_state/runs/2026-11-19.json").unlink()  # as if it had crashed on that date
    resumed = CliRunner().invoke(app, args)
    assert "1 date(s) to run, 2 already complete" in resumed.output
    assert "nightly run for 2026-11-19 (1/1)" in resumed.output


def test_a_backfill_side_by_side_gives_the_same_tables(prefect_api, tmp_path):
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        landing(root / "landing", users=150, items=24, days=5, seed=8, end_date=END)
    for root, k in zip(roots, ("1", "2"), strict=True):
        args = ["backfill", "--start", "2026-11-17", "--end", "2026-11-20", "--concurrency", k]
        result = CliRunner().invoke(app, [*args, "--data-root", str(root)])
        assert result.exit_code == 0, result.output
    one, two = (Warehouse(root) for root in roots)
    assert all(two.completed_run(f"2026-11-{d}") for d in (17, 18, 19, 20))
    clean = {k: v for k, v in _hashes(one).items() if k.startswith("clean/")}
    assert clean and clean == {k: v for k, v in _hashes(two).items() if k in clean}


def test_a_failing_check_blocks_the_run_and_says_which_check_table_and_numbers(
    prefect_api, tmp_path, monkeypatch
):
    root = tmp_path / "data"
    landing(root / "landing", users=100, items=20, days=2, seed=4, end_date=END)
    bad_rows = "".join(f"u{i},not a time,view\n" for i in range(400))
    (root / "landing/events/2026-11-20-retry.csv").write_text(
        "user_id,event_time,event_type\n" + bad_rows
    )
    args = ["run", "--date", "2026-11-20", "--data-root", str(root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "check quarantine_share failed: events:" in result.output
    assert "over the limit of 5.0%" in result.output
    rows = _artifacts("checks-events", root)[0].data
    assert '"quarantine_share"' in str(rows) and '"fail"' in str(rows)

    monkeypatch.setenv("NIGHTOWL_CHECKS__WARN_ONLY", '["quarantine_share"]')
    assert CliRunner().invoke(app, args).exit_code == 0  # a warning does not block


def test_a_failed_run_alerts_the_configured_webhook(prefect_api, tmp_path, monkeypatch):
    with webhook() as hook:
        monkeypatch.setenv("NIGHTOWL_ALERTS__WEBHOOK_URL", f"{hook.url}/hook")
        root = tmp_path / "data"
        (root / "landing/events").mkdir(parents=True)
        (root / "landing/events/2026-11-20.csv").write_text("user_id\nu1\n")
        args = ["run", "--date", "2026-11-20", "--data-root", str(root)]
        assert CliRunner().invoke(app, args).exit_code == 1
    [alert] = hook.received
    assert alert["flow"] == "nightowl-nightly" and alert["date"] == "2026-11-20"
    assert alert["failed_task"] == "ingest-events"
    assert "2026-11-20.csv" in alert["message"] and "event_time" in alert["message"]
    assert alert["text"] == "nightowl: nightowl-nightly for 2026-11-20 failed in ingest-events"


def test_secrets_from_config_or_environment_reach_no_log_artifact_or_file(
    prefect_api, tmp_path, monkeypatch, caplog
):
    secrets = ["T0-from-config-5e3c", "T0-from-environment-77ab"]
    root = tmp_path / "data"
    landing(root / "landing", users=60, items=16, days=2, seed=3, end_date=END)
    (root / "landing/events/2026-11-20-broken.csv").write_text("user_id\nu1\n")
    config = tmp_path / "nightowl.toml"
    args = ["run", "--date", END.isoformat(), "--data-root", str(root), "--config", str(config)]
    outputs = []
    with webhook(status=403) as hook:  # refused: so the run logs its failure to deliver, too
        config.write_text(f'[alerts]\nwebhook_url = "{hook.url}/services/{secrets[0]}"\n')
        outputs.append(CliRunner().invoke(app, args))
        monkeypatch.setenv("NIGHTOWL_ALERTS__WEBHOOK_URL", f"{hook.url}/services/{secrets[1]}")
        outputs.append(CliRunner().invoke(app, args))
    assert len(hook.received) == 2
    assert [r.exit_code for r in outputs] == [1, 1]
    said = "\n".join(r.output for r in outputs) + caplog.text
    assert said.count("the alert to http://127.0.0.1") >= 2  # both were tried
    held = prefect_records()  # all the shared server holds: other tests' records hold no secret
    assert "ingest-events" in _own_records(root)  # and this test's runs are among them
    for secret in secrets:
        assert secret not in said
        assert secret not in held
        leaks = [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert leaks == []


def test_a_dask_cluster_produces_the_same_tables_as_threads(prefect_api, tmp_path, monkeypatch):
    from nightowl.flows.nightly import nightly
    from nightowl.flows.runtime import task_runner
    from nightowl.flows.settings import load_settings

    roots = [tmp_path / "threads", tmp_path / "dask"]
    for root in roots:
        landing(root / "landing", users=500, items=24, days=10, seed=6, end_date=END)
    assert nightly(run_date=END, data_root=str(roots[0]), return_state=True).is_completed()

    # On the cluster the bucketed steps also send their buckets out: small ones, so there are many.
    monkeypatch.setenv("NIGHTOWL_RECOMMEND__BUCKET_USERS", "100")
    monkeypatch.setenv("NIGHTOWL_MODEL__FEATURES_BUCKET_EVENTS", "1000")
    on_dask = load_settings(None, runner={"kind": "dask", "dask_workers": 2})
    with_dask = nightly.with_options(task_runner=task_runner(on_dask))
    assert with_dask(run_date=END, data_root=str(roots[1]), return_state=True).is_completed()
    threads, dask = (_hashes(Warehouse(root)) for root in roots)
    assert threads and threads == dask
    lists = Warehouse(roots[1]).manifests("predictions", "recommendations")[-1]
    assert lists.stats["fanout"] == "dask" and lists.stats["buckets"] > 1, lists.stats


def test_the_nightly_flow_trains_a_champion_scores_users_and_the_cli_shows_it(
    prefect_api, tmp_path
):
    root = tmp_path / "data"
    landing(root / "landing", users=600, items=60, days=92, seed=4, end_date=END)
    runner, dr = CliRunner(), ["--data-root", str(root)]
    first_night = END - timedelta(days=1)
    result = runner.invoke(app, ["run", "--date", first_night.isoformat(), *dr])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "ERROR" not in result.output
    registry = Registry(Warehouse(root))
    champion = registry.champion("propensity")
    assert champion is not None and champion.version.startswith(first_night.isoformat())
    first_champion = champion.version

    result = runner.invoke(app, ["run", "--date", END.isoformat(), *dr])  # champion is fresh
    assert result.exit_code == 0, result.output
    assert len(registry.versions("propensity")) == 1
    wh = Warehouse(root)
    as_of = [m.partition["as_of"] for m in wh.manifests("predictions", "user_scores")]
    assert as_of == [END.isoformat(), (END + timedelta(days=1)).isoformat()]

    sql = "select risk_tier, count(*) n, avg(p_purchase_30d) p from user_scores group by 1"
    result = runner.invoke(app, ["query", sql, *dr])
    assert result.exit_code == 0 and "prospect" in result.output, result.output
    scores = run_query(wh, "select count(*), count(distinct model_version) from user_scores")
    features = run_query(wh, "select count(*) from user_features").item()
    assert scores.row(0) == (features, 1)

    # The market tables came out beside the scores, from a demand model trained the first night.
    demand = registry.champion("demand")
    assert demand is not None and demand.version.startswith(first_night.isoformat())
    forecast = run_query(
        wh, "select count(distinct item_id), min(target_date), count(distinct model_version) "
        "from demand_forecast"
    )  # fmt: skip
    positioned = run_query(wh, "select count(*) from price_position where active").item()
    assert forecast.row(0) == (positioned, END + timedelta(days=1), 1)

    # And the feedback tables, scored by the lexicon: this small shop has too few ratings.
    lexicon = run_query(
        wh, "select count(*), count(distinct sentiment_source), min(model_version) "
        "from feedback_scores where sentiment_source <> 'rating'"
    ).row(0)  # fmt: skip
    assert lexicon[0] > 0 and lexicon[1] == 1 and lexicon[2].startswith("vader-")
    queue = run_query(wh, "select count(*), count(suggested_answer) from support_queue").row(0)
    assert queue[0] > 0 and queue[1] > 0
    queue_shown = _artifacts("support-queue", root)[0]  # the UI shows the top tickets
    assert "urgency" in str(queue_shown.data)
    assert run_query(wh, "select count(*) from product_sentiment").item() > 0

    # And every active user's recommendations, ranked by a ranker trained the first night.
    ranker = registry.champion("recommender")
    assert ranker is not None and ranker.version.startswith(first_night.isoformat())
    lists = run_query(
        wh, "select count(distinct user_id), count(*), min(model_version), max(rank) "
        "from recommendations"
    ).row(0)  # fmt: skip
    assert lists[1] == 10 * lists[0] > 0 and lists[2] == ranker.version and lists[3] == 10
    mix = _artifacts("recommendations", root)[0]  # the UI shows which sources the lists came from
    assert ranker.version in mix.description and "mean_rank" in str(mix.data)

    # And the report: its tables, its page (linked from the run in the UI) and what it says.
    _assert_the_report(wh, runner, dr, tmp_path)

    result = runner.invoke(app, ["models", *dr])
    assert result.exit_code == 0 and champion.version[:12] in result.output, result.output
    assert demand.version[:12] in result.output
    assert "recommender models" in result.output
    # Two nights in, nothing served has had its outcomes in yet: each champion says so.
    assert f"matured: no night served by {champion.version} has had its outcomes in" in (
        result.output
    )
    result = runner.invoke(app, ["train", "--date", END.isoformat(), *dr])
    assert result.exit_code == 0, result.output
    assert "recency_only" in result.output and "rfm" in result.output and "Parity" in result.output
    assert "demand backtest, item x day" in result.output and "WAPE" in result.output
    assert "no sentiment model trained" in result.output and "VADER" in result.output
    assert "recommender: purchases of the" in result.output and "repeat_buy" in result.output
    assert len(registry.versions("propensity")) == 2
    assert len(registry.versions("demand")) == 2

    # A deleted scores partition is recomputed; the features it reads are reused from the cache.
    from nightowl.flows.nightly import nightly

    tomorrow = {"as_of": (END + timedelta(days=1)).isoformat()}
    before = wh.manifest("predictions", "user_scores", tomorrow).content_hash
    shutil.rmtree(wh.partition_dir("predictions", "user_scores", tomorrow))
    state = nightly(run_date=END, data_root=str(root), return_state=True)
    states = _task_states(state.state_details.flow_run_id)
    assert states["features-user"] == "Cached" and states["score-users"] == "Completed", states
    champion = registry.champion("propensity").version
    after = wh.manifest("predictions", "user_scores", tomorrow)
    scored_by = run_query(wh, "select distinct model_version from user_scores").item()
    # A new champion is a new cache key: rescored with it (or with the simple rule it did not
    # beat on its held-out snapshot: this small shop's RFM is close to any model).
    card = registry.card("propensity", champion)
    assert scored_by == (rule_version(card) if card.serves_rule else champion)
    assert after.content_hash == before or champion != first_champion


def test_evaluate_backtests_every_model_beside_its_rules_and_the_report_shows_it(
    prefect_api, tmp_path
):
    # Ingested and cleaned without a nightly run: evaluate trains what it judges itself.
    root = build_warehouse(tmp_path / "data", users=600, days=106).data_root
    runner, dr = CliRunner(), ["--data-root", str(root)]
    last_day = EVALUATED_TO
    result = runner.invoke(app, ["evaluate", "--date", last_day.isoformat(), "-n", "2", *dr])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "ERROR" not in result.output
    assert "propensity (all_users): roc_auc by origin" in result.output
    assert "recommender (all): recall by origin" in result.output
    assert "demand (item): wape by origin" in result.output
    assert "its best simple rule" in result.output and "of 2 origins" in result.output
    # Sentiment needs more ratings than this small shop has: it says so, the others are written.
    assert "sentiment not evaluated" in result.output

    wh = Warehouse(root)
    figures = run_query(
        wh, "select model, count(distinct origin) origins, count(*) n from model_evaluation "
        "where \"primary\" and kind = 'model' group by 1 order by 1"
    )  # fmt: skip
    assert figures["model"].to_list() == ["churn", "demand", "propensity", "recommender"]
    assert set(figures["origins"].to_list()) == {2}
    # Each origin's model is trained on data before it and judged after it.
    origins = run_query(
        wh, "select distinct origin from model_evaluation where model = 'propensity'"
    )["origin"].sort()
    assert origins.to_list() == [
        last_day + timedelta(days=1 - 30 - 14),
        last_day + timedelta(days=1 - 30),
    ]

    # The report page answers the question from those figures.
    assert runner.invoke(app, ["report", "--date", last_day.isoformat(), *dr]).exit_code == 0
    page = (root / "reports" / last_day.isoformat() / "index.html").read_text()
    assert "Do the models beat the simple rules?" in page and "Not measured yet" not in page
    assert "propensity (all_users, roc_auc): the model" in page
    assert (root / "reports" / last_day.isoformat() / "model_evaluation.csv").exists()


def test_train_without_enough_history_says_how_much_it_needs(prefect_api, tmp_path):
    root = tmp_path / "data"
    landing(root / "landing", users=100, items=20, days=5, seed=2, end_date=END)
    runner, dr = CliRunner(), ["--data-root", str(root)]
    assert runner.invoke(app, ["run", "--date", END.isoformat(), *dr]).exit_code == 0
    result = runner.invoke(app, ["train", "--date", END.isoformat(), *dr])
    assert result.exit_code == 1
    assert "no propensity model trained" in result.output and "at least 88 days" in result.output
    assert "no demand model trained" in result.output and "too short" in result.output


def test_a_night_without_events_warns_and_succeeds(prefect_api, tmp_path):
    root = tmp_path / "data"
    landing(root / "landing", users=50, items=20, days=2, seed=2, end_date=END)
    for path in (root / "landing" / "events").iterdir():
        path.unlink()
    config = tmp_path / "nightowl.toml"
    config.write_text("[checks]\nfresh_sources = []\n")
    args = ["run", "--date", END.isoformat(), "--data-root", str(root), "--config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not Warehouse(root).manifests("predictions", "user_scores")


def _assert_the_report(wh: Warehouse, runner: CliRunner, dr: list[str], tmp_path: Path) -> None:
    """The report tables reconcile with what they read, and the page renders in Chromium with
    every chart, offline, with no console errors."""
    import html
    import re

    from tests.browser import coloured_share, visit
    from tests.tasks.report.test_units import assert_findings_traceable

    as_of = END + timedelta(days=1)
    for table in (
        "kpi_daily",
        "segments",
        "at_risk_customers",
        "product_health",
        "campaign_briefs",
    ):
        assert wh.manifest("reports", table, {"as_of": as_of.isoformat()}).rows > 0, table
    users = run_query(wh, "select sum(users) from segments").item()
    assert users == run_query(wh, "select count(*) from user_scores").item()
    briefs = run_query(wh, "select count(*), min(writer), count(send_time) from campaign_briefs")
    assert briefs.row(0)[:2] == (
        run_query(wh, "select count(*) from segments").item(),
        "template-v1",
    )
    top = run_query(wh, "select user_id, top_recommendation from at_risk_customers where rank = 1")
    who = top["user_id"][0]
    first = run_query(
        wh, f"select item_id from recommendations where rank = 1 and user_id = '{who}'"
    )
    assert top["top_recommendation"].to_list() == first["item_id"].to_list()

    link = _artifacts("nightly-report", wh.data_root)[0]
    page = wh.data_root / "reports" / END.isoformat() / "index.html"
    assert f"({page.as_uri()})" in link.data and page.exists()
    assert "What changed on" in str(_artifacts("report-summary", wh.data_root)[0].data)
    assert "report" in str(_artifacts("nightly-summary", wh.data_root)[0].data)
    seen = visit(page, tmp_path / "report.png", sort=("table-at_risk_customers", 6))
    assert seen.errors == [] and [m for m in seen.console if m[0] == "error"] == []
    assert all(url.startswith(("file:", "data:")) for url in seen.requests), seen.requests
    ids = ("kpi", "segments", "risk", "sentiment", "forecast")
    text = page.read_text()
    assert seen.charts == len(ids) and all(f'id="chart-{i}"' in text for i in ids)
    assert "What changed" in seen.text and "Campaign briefs" in seen.text
    # The screenshot check: each chart, as drawn, is mostly picture, not a blank box.
    assert sorted(seen.chart_shots) == sorted(f"chart-{i}" for i in ids)
    for name, shot in seen.chart_shots.items():
        assert coloured_share(shot, None) > 0.02, name
    assert coloured_share(seen.chart_shots["chart-kpi"], (0, 114, 178)) > 0.002  # its blue
    # The table comes by value at risk, most first; a click on its header turns it around.
    values = seen.sorted_values
    assert len(values) > 2 and values == sorted(values) and values[0] < values[-1]
    # Every line of "what changed" names a query that gives its numbers, on a full warehouse,
    # and every query the page names runs.
    assert_findings_traceable(wh, END)
    queries = {html.unescape(q) for q in re.findall(r'nightowl query "(.*?)"', page.read_text())}
    queries |= {
        html.unescape(q) for q in re.findall(r"nightowl query &#34;(.*?)&#34;", page.read_text())
    }
    assert len(queries) > 12
    for sql in queries - {q for q in queries if "<table>" in q}:
        assert run_query(wh, sql).height > 0, sql

    result = runner.invoke(app, ["report", "--date", END.isoformat(), *dr])
    assert result.exit_code == 0, result.output
    assert "What changed on" in result.output and str(page) in result.output
    out = tmp_path / "briefs.csv"
    result = runner.invoke(app, ["query", "select * from campaign_briefs", "-o", str(out), *dr])
    assert result.exit_code == 0 and "; " in out.read_text()  # lists joined for spreadsheets


def test_a_failed_market_ingest_skips_by_name_and_the_morning_page_says_so(
    prefect_api, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    root = tmp_path / "data"
    landing(root / "landing", users=200, items=30, days=12, seed=9, end_date=END)
    tonight = root / "landing/market_prices/2026-11-20.parquet"
    aside = tonight.read_bytes()
    tonight.write_bytes(b"not parquet")
    night_before = ["run", "--date", "2026-11-19", "--data-root", str(root)]
    tonight.unlink()  # the night before ran before tonight's file landed
    assert CliRunner().invoke(app, night_before).exit_code == 0
    tonight.write_bytes(aside[:40])  # tonight's export was cut short
    monkeypatch.setenv("NIGHTOWL_RUN__IO_RETRIES", "0")  # Prefect logs a traceback then
    result = CliRunner().invoke(app, ["run", "--date", "2026-11-20", "--data-root", str(root)])
    assert result.exit_code == 1
    out = result.output
    assert "Traceback" not in out
    # One ERROR, the real failure; each step that could not run says so once, by its own name.
    errors = [line for line in out.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "ingest-market_prices" in errors[0], errors
    skipped = {"clean-market_prices", "check-market_prices", "features-user", "score-users",
               "train-propensity", "price-position", "train-demand", "forecast",
               "train-recommender", "recommend"}  # fmt: skip
    warned = re.findall(r"\| WARNING \| Task run '([^']+)' - \1 skipped: (\S+) failed", out)
    assert sorted(warned) == sorted((s, "ingest-market_prices") for s in skipped)
    # The last lines say which step failed and why, what did not run, and where to look.
    said = out.rpartition("nightly run for 2026-11-20 failed: ")[2]
    assert "ingest-market_prices: IngestFailed" in said and "2026-11-20.parquet" in said
    assert "not run because of them: clean-market_prices, " in said
    assert f"The morning page says what is stale: {root}/reports/2026-11-20/index.html" in said
    own = FlowRunFilter(id=FlowRunFilterId(any_=_own_runs(root)))  # the latest of this test's
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=own, limit=1, sort="START_TIME_DESC")
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    states = {r.name: r.state.name for r in runs if r.state is not None}
    assert {n for n, s in states.items() if s == "Skipped"} == skipped
    assert not [n for n in states if re.search(r"-[0-9a-f]{3}$", n)]  # no generated names

    # The morning page leads with what went wrong and what it shows from an earlier night.
    html = (root / "reports/2026-11-20/index.html").read_text()
    banner = html[html.index('id="banner"') : html.index('id="what-changed"')]
    assert "<code>ingest-market_prices</code> failed" in banner and "2026-11-20.parquet" in banner
    assert "<code>price-position</code>" in banner
    assert "price_position: from the night of 2026-11-19, not tonight&#39;s" in banner
    story = html[
        html.index('id="what-changed"') : html.index("</section>", html.index('id="what-changed"'))
    ]
    [health] = [line for line in story.split("<li>") if "products need action" in line]
    assert "Not tonight&#39;s data:" in health and "price_position (from 2026-11-19)" in health
