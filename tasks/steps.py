"""Prefect tasks: thin wrappers around the units, with cache keys built from their inputs.

A step's cache key is its name + partition + code version + settings + the fingerprints of its
inputs (DESIGN §6), so a retried or repeated run reuses every step whose inputs did not change.
A cached result whose outputs have since been deleted is dropped before Prefect looks it up, so
the step recomputes instead of returning a manifest that points at nothing.
"""

from __future__ import annotations

import logging
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from pydantic import BaseModel, Field

from schemas.config import CheckSettings, SourceConfig
from tasks import units
from tasks.deadline import time_limit
from tasks.summary import summary_markdown, summary_rows
from warehouse.landing import landing_files
from warehouse.ledger import Ledger
from warehouse.manifest import combined_hash
from warehouse.store import Warehouse

log = logging.getLogger("nightowl")


class StepContext(BaseModel):
    """What every step needs from the settings: small, serialisable, part of the cache key."""

    data_root: str
    config_dir: str
    code_version: str
    tolerance_hours: float
    source: SourceConfig
    checks: CheckSettings = Field(default_factory=CheckSettings)
    timeout_seconds: float | None = None

    def warehouse(self) -> Warehouse:
        return Warehouse(Path(self.data_root), self.code_version)


def _landing_fingerprint(ctx: StepContext, source: str, run_date: date) -> str:
    root, config_dir = Path(ctx.data_root), Path(ctx.config_dir)
    files = landing_files(source, ctx.source, run_date, root, config_dir)
    stats = [(f.path, f.path.stat()) for f in files]
    return combined_hash([f"{p}|{s.st_size}|{s.st_mtime_ns}" for p, s in stats])


def _ledger_fingerprint(wh: Warehouse, source: str) -> str:
    """Every file the clean step may read: a later night's late rows change an older day too."""
    return combined_hash([e.sha256 for e in Ledger(wh).entries(source)])


def _outputs_exist(report: Any, wh: Warehouse) -> bool:
    if isinstance(report, units.IngestReport):
        return all((wh.root / f).exists() for e in report.files for f in e.raw_files)
    if isinstance(report, units.CleanReport):
        return all(
            (m := wh.manifest("clean", report.table, {"dt": dt})) is not None
            and m.content_hash == digest
            for dt, digest in report.partitions.items()
        )
    return True


def _valid_key(context: TaskRunContext, key: str, wh: Warehouse) -> str:
    """``key``, after forgetting its cached result if that result's outputs are gone."""
    store = context.result_store
    if store is None or not store.exists(key):
        return key
    try:
        result = store.read(key).result
    except Exception:  # an unreadable record is as good as a dangling one
        result = None
    if result is not None and _outputs_exist(result, wh):
        return key
    log.info("the cached result of %s points at missing outputs; recomputing", context.task.name)
    basepath = getattr(store.result_storage, "basepath", None)
    if basepath is not None:
        (Path(basepath).expanduser() / key).unlink(missing_ok=True)
        return key
    return combined_hash([key, "recompute", str(uuid.uuid4())])  # storage we cannot delete from


def ingest_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of an ingest: settings, code and the landing files that have arrived."""
    ctx: StepContext = params["ctx"]
    source, run_date = params["source"], params["run_date"]
    key = combined_hash(
        [
            "ingest", ctx.data_root, source, run_date.isoformat(), ctx.code_version,
            ctx.source.model_dump_json(), _landing_fingerprint(ctx, source, run_date),
        ]
    )  # fmt: skip
    return _valid_key(context, key, ctx.warehouse())


def clean_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of a clean: settings, code, the ingest report and every raw file it may read."""
    ctx: StepContext = params["ctx"]
    source, run_date = params["source"], params["run_date"]
    ingested: units.IngestReport = params["ingested"]
    wh = ctx.warehouse()
    key = combined_hash(
        [
            "clean", ctx.data_root, source, run_date.isoformat(), ctx.code_version,
            ctx.source.model_dump_json(),
            str(ctx.tolerance_hours),
            ingested.model_dump_json(exclude={"newly_ingested", "skipped", "seconds"}),
            _ledger_fingerprint(wh, source),
        ]
    )  # fmt: skip
    return _valid_key(context, key, wh)


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a step only when it failed on I/O (a full disk, a flaky mount), not on bad data."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(
    name="ingest",
    task_run_name="ingest-{source}",
    cache_key_fn=ingest_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def ingest_step(
    ctx: StepContext, source: str, run_date: date, force: bool = False
) -> units.IngestReport:
    """Landing files of one source → raw + quarantine partitions for the run date.

    ``force`` reads this date's files again even though the ledger has them.
    """
    with time_limit(ctx.timeout_seconds, f"ingest-{source}"):
        return units.ingest_source(
            ctx.warehouse(), source, ctx.source, run_date, Path(ctx.config_dir), force=force
        )


@task(name="check", task_run_name="check-{source}", cache_policy=NO_CACHE)
def check_step(
    ctx: StepContext,
    source: str,
    run_date: date,
    ingested: units.IngestReport,
    cleaned: units.CleanReport,
) -> list[dict]:
    """Data checks of one source; a failing blocking check fails the step (and the run).

    ``cleaned`` is here so the checks run after the clean partitions they read are published.
    """
    results = units.check_source(ctx.warehouse(), source, run_date, ingested, ctx.checks)
    rows = [r.as_row() for r in results]
    create_table_artifact(
        rows, key=f"checks-{source.replace('_', '-')}", description=f"{source} on {run_date}"
    )
    for result in results:
        if result.status == "warn":
            log.warning("check %s: %s", result.check, result.message)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        raise units.ChecksFailed("; ".join(f"check {r.check} failed: {r.message}" for r in failed))
    return rows


@task(name="record-run", cache_policy=NO_CACHE)
def record_run_step(ctx: StepContext, run_date: date, summary: dict) -> None:
    """Mark the run date complete (what `nightowl backfill` skips) and publish its summary.

    The table artifact's key stays the same every night, so the UI shows its history.
    """
    wh = ctx.warehouse()
    rows = summary_rows(summary)
    create_table_artifact(rows, key="nightly-steps", description=f"steps of {run_date}")
    create_markdown_artifact(
        summary_markdown(run_date.isoformat(), rows, str(wh.root)),
        key="nightly-summary",
        description=f"nightly run for {run_date}",
    )
    wh.record_run(run_date.isoformat(), summary)


@task(
    name="clean",
    task_run_name="clean-{source}",
    cache_key_fn=clean_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def clean_step(
    ctx: StepContext, source: str, run_date: date, ingested: units.IngestReport
) -> units.CleanReport:
    """Raw rows of one source → the clean partitions they feed, republished."""
    with time_limit(ctx.timeout_seconds, f"clean-{source}"):
        wh = ctx.warehouse()
        return units.clean_source(wh, source, ctx.source, run_date, ctx.tolerance_hours)
