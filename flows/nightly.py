"""The nightly flow: every source is ingested, cleaned and checked, for one run date."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# real annotations when a deployment run loads this module from its file.
from datetime import date, timedelta
from pathlib import Path

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.settings import get_current_settings
from prefect.states import Failed

from nightowl.errors import NightowlError
from nightowl.flows.alerts import failure_alert, health_alert, send_alert
from nightowl.flows.graph import NIGHT, NIGHT_GROUPS, forced_steps
from nightowl.flows.night import Night, SoFar, Step, why_failed
from nightowl.flows.settings import Settings, load_settings
from nightowl.flows.steps import (
    NIGHT_TASKS,
    ModelContext,
    StepContext,
    check_step,
    clean_step,
    ingest_step,
    record_run_step,
    report_artifacts_step,
)
from nightowl.schemas.landing import SOURCES
from nightowl.warehouse.manifest import code_version
from nightowl.warehouse.store import Warehouse


class NightlyFailed(NightowlError):
    """One or more steps failed; the others completed and their results are cached."""

    def __init__(
        self, message: str, failed_steps: list[str], skipped_steps: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.failed_steps = failed_steps
        #: The steps that did not run because a step they read failed.
        self.skipped_steps = skipped_steps or []


def step_options(settings: Settings) -> dict:
    """Retries every step gets (on I/O errors only), each delay three times the last."""
    run = settings.run
    delays = [run.retry_delay_seconds * 3**i for i in range(run.io_retries)]
    # Time limits are the steps' own (tasks/common/deadline.py): Prefect cannot stop a thread.
    return {"retries": run.io_retries, "retry_delay_seconds": delays or 0}


def step_timeout_seconds(settings: Settings) -> float | None:
    """Each step's own time limit (tasks/common/deadline.py): Prefect cannot stop a thread."""
    minutes = settings.run.step_timeout_minutes
    return minutes * 60 if minutes else None


def step_context(settings: Settings, source: str) -> StepContext:
    """The slice of the settings that a step for ``source`` needs."""
    return StepContext(
        data_root=str(settings.data_root),
        config_dir=str(settings.config_dir),
        code_version=code_version(),
        tolerance_hours=settings.future_tolerance_hours,
        horizon_days=settings.future_horizon_days,
        chunk_rows=settings.clean_chunk_rows,
        raw_compression=settings.raw_compression,
        source=settings.sources[source],
        checks=settings.checks,
        market=settings.market,
        feedback=settings.feedback,
        timeout_seconds=step_timeout_seconds(settings),
    )


def model_context(settings: Settings) -> ModelContext:
    """The slice of the settings that the model steps need."""
    return ModelContext(
        data_root=str(settings.data_root),
        code_version=code_version(),
        model=settings.model,
        market=settings.market,
        feedback=settings.feedback,
        recommend=settings.recommend,
        report=settings.report,
        evaluate=settings.evaluate,
        health=settings.health,
        timezone=settings.timezone,
        config_dir=str(settings.config_dir),
        timeout_seconds=step_timeout_seconds(settings),
        fanout=settings.runner.fanout_of(),
    )


def night_steps(
    night: Night,
    settings: Settings,
    run_date: date,
    done: dict[str, dict[str, Step]],
    forced: set[str],
    named: set[str],
) -> None:
    """Every step of the graph after the per-source ones, wired as flows/graph.py declares it,
    into ``done`` by group. A training step trains when due, or when named (``named``) whatever
    the cadence; recomputing an upstream step does not make training due."""
    ctx, options = model_context(settings), step_options(settings)
    day = {"as_of": run_date + timedelta(days=1), "run_date": run_date}
    runs = {name: step for group in done.values() for name, step in group.items()}
    runs |= {f"{name}-{source}": done[source][name] for source in SOURCES for name in done[source]}
    for spec in NIGHT:
        task = NIGHT_TASKS[spec.name]
        handed = [[runs[r] for r in h] if isinstance(h, list) else runs[h] for h in spec.handed()]
        needs = tuple(runs[r] for r in spec.needs())
        if spec.trains:
            trains_now = bool({spec.name, "all"} & named)
            step = night.add(
                task.with_options(**options),
                ctx,
                day[spec.day],
                *handed,
                needs=needs,
                after=tuple(runs[r] for r in spec.optional),
                force=trains_now,
            )
        elif spec.last:  # after every other step, told what went wrong before it
            task = task.with_options(refresh_cache=spec.name in forced, **options)
            everything = tuple(s for group in done.values() for s in group.values())
            step = night.add(task, ctx, day[spec.day], *handed, problems=SoFar(), after=everything)
        else:
            task = task.with_options(refresh_cache=spec.name in forced, **options)
            after = tuple(runs[r] for r in spec.optional)
            step = night.add(task, ctx, day[spec.day], *handed, needs=needs, after=after)
        done.setdefault(spec.group, {})[spec.name] = runs[spec.name] = step
    built = done["report"]["report"]
    done["report"]["report-artifacts"] = night.add(report_artifacts_step, built)


def alert_on_failure(flow, flow_run, state) -> None:
    """Tell the configured webhook which run failed, where, why, and where to look."""
    params = flow_run.parameters
    config = params.get("config")
    settings = load_settings(Path(config) if config else None, data_root=params.get("data_root"))
    if not settings.alerts.webhook_url:
        return
    error = state.result(raise_on_failure=False)
    ui = get_current_settings().ui_url
    payload = failure_alert(
        flow=flow.name,
        run_date=str(params.get("run_date") or ""),
        failed_steps=getattr(error, "failed_steps", []),
        message=str(error) if isinstance(error, BaseException) else (state.message or ""),
        ui_link=f"{ui.rstrip('/')}/runs/flow-run/{flow_run.id}" if ui else None,
    )
    send_alert(settings.alerts.webhook_url, payload, settings.alerts.timeout_seconds)


@flow(
    name="nightowl-nightly",
    flow_run_name="nightly-{run_date}",
    persist_result=True,
    on_failure=[alert_on_failure],
)
def nightly(
    run_date: date | None = None,
    config: str | None = None,
    data_root: str | None = None,
    force_steps: list[str] | None = None,
) -> dict[str, dict] | State:
    """Ingest, clean and check every source for ``run_date`` (default: yesterday, business zone),
    then as of the next day: featurize, train when due and score users; position prices, train
    the demand model when due and forecast demand; train the sentiment model when due, score
    feedback, and build product sentiment and the support queue; train the recommender when due
    and write every active user's recommendations; then the report tables and the report page.

    ``force_steps`` recomputes those steps and everything downstream of them, cache or not.
    """
    settings = load_settings(Path(config) if config else None, data_root=data_root)
    run_date = run_date or settings.yesterday()
    forced = forced_steps(force_steps)
    # A served run starts here, not at the command line: a read-only or full data root fails it
    # at once, with the reason, before any step writes.
    if problem := Warehouse(settings.data_root).storage_problem(settings.run.min_free_bytes):
        raise NightlyFailed(f"data root: {problem}", [])
    # Before any step: files are seen, and early rows held, as of the latest date ever run.
    Warehouse(settings.data_root).raise_high_water(run_date.isoformat())
    night, steps = Night(), {}
    for source in SOURCES:
        ctx, options = step_context(settings, source), step_options(settings)
        ingest = ingest_step.with_options(refresh_cache=f"ingest-{source}" in forced, **options)
        clean = clean_step.with_options(refresh_cache=f"clean-{source}" in forced, **options)
        ingested = night.add(ingest, ctx, source, run_date, force=f"ingest-{source}" in forced)
        cleaned = night.add(clean, ctx, source, run_date, ingested)
        checked = night.add(check_step, ctx, source, run_date, ingested, cleaned)
        steps[source] = {"ingest": ingested, "clean": cleaned, "check": checked}
    named = {n.strip() for n in force_steps or []}
    night_steps(night, settings, run_date, steps, forced, named)
    night.run()
    try:
        summary = summary_of(steps)
    except NightlyFailed as exc:
        # Returned, not raised: each failure was logged once by its own step; a raise would
        # log it again with Prefect's traceback. Calling the flow still raises ``exc``.
        return Failed(message=str(exc), data=exc)
    page = (summary["report"].get("report") or {}).get("page")
    record_run_step(step_context(settings, SOURCES[0]), run_date, summary, page)
    alert_on_health(settings, run_date, summary, page)
    return summary


def alert_on_health(
    settings: Settings, run_date: date, summary: dict[str, dict], page: str | None
) -> bool:
    """Tell the configured webhook, in one message, what the model-health step alerts about
    tonight (models losing to their simple rules, drifted inputs); False when nothing was sent."""
    alerts = (summary.get("health", {}).get("model-health") or {}).get("alerts")
    if not alerts or not settings.alerts.webhook_url:
        return False
    payload = health_alert(run_date=run_date.isoformat(), alerts=alerts, report_page=page)
    return send_alert(settings.alerts.webhook_url, payload, settings.alerts.timeout_seconds)


def summary_of(steps: dict[str, dict[str, Step]]) -> dict[str, dict]:
    """Per source or group, each step's report; raises NightlyFailed naming every failed step
    and every step skipped because of one."""
    summary: dict[str, dict] = {}
    failures: list[str] = []
    skipped: list[str] = []
    for source, group in steps.items():
        entry: dict = {}
        for name, step in group.items():
            run = name if source in NIGHT_GROUPS else f"{name}-{source}"
            if step.skipped_for is not None:
                skipped.append(run)
            elif step.future is not None and step.future.state.is_completed():
                result = step.future.result()
                entry[name] = (
                    result.model_dump(mode="json") if hasattr(result, "model_dump") else result
                )
            else:
                failures.append(f"{run}: {why_failed(step.state)}")
        summary[source] = entry
    if failures:
        message = "steps failed:\n" + "\n".join(f"  - {f}" for f in failures)
        if skipped:
            message += f"\nnot run because of them: {', '.join(skipped)}"
        raise NightlyFailed(message, [f.split(":", 1)[0] for f in failures], skipped)
    return summary
