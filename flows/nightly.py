"""The nightly flow: every source is ingested, cleaned and checked, for one run date."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# real annotations when a deployment run loads this module from its file.
from datetime import date, timedelta
from pathlib import Path

from prefect import flow
from prefect.settings import get_current_settings
from prefect.states import Failed

from nightowl.errors import NightowlError
from nightowl.flows.alerts import failure_alert, send_alert
from nightowl.flows.graph import (
    FEATURE_SOURCES,
    FEEDBACK_SOURCES,
    MARKET_SOURCES,
    RECOMMEND_SOURCES,
    forced_steps,
)
from nightowl.flows.night import Night, SoFar, Step, why_failed
from nightowl.flows.settings import Settings, load_settings
from nightowl.flows.steps import (
    ModelContext,
    StepContext,
    check_step,
    clean_step,
    features_step,
    feedback_step,
    forecast_step,
    ingest_step,
    price_position_step,
    product_sentiment_step,
    recommend_step,
    record_run_step,
    report_artifacts_step,
    report_step,
    score_step,
    support_queue_step,
    train_demand_step,
    train_recommender_step,
    train_sentiment_step,
    train_step,
)
from nightowl.schemas.landing import SOURCES
from nightowl.warehouse.manifest import code_version
from nightowl.warehouse.store import Warehouse

#: The step groups that run once a night (the others are sources, one step run per source).
NIGHT_GROUPS = ("models", "market", "feedback-models", "recommendations", "report")


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
        timezone=settings.timezone,
        config_dir=str(settings.config_dir),
        timeout_seconds=step_timeout_seconds(settings),
    )


def model_steps(
    night: Night,
    settings: Settings,
    run_date: date,
    cleaned: list[Step],
    forced: set[str],
    train_now: bool = False,
) -> dict[str, Step]:
    """features → train (when due, or ``train_now``) → score, as of the day after ``run_date``.

    Recomputing an upstream step does not make training due: only naming ``train`` does.
    """
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)  # everything up to and including the run date
    featurize = features_step.with_options(refresh_cache="features" in forced, **options)
    score = score_step.with_options(refresh_cache="score" in forced, **options)
    features = night.add(featurize, ctx, as_of, cleaned)
    trained = night.add(
        train_step.with_options(**options), ctx, run_date, features, force=train_now
    )
    # A failed training leaves the champion in place: tonight's scores still come out.
    scored = night.add(score, ctx, features, after=(trained,))
    return {"features": features, "train": trained, "score": scored}


def market_steps(
    night: Night,
    settings: Settings,
    run_date: date,
    cleaned: list[Step],
    forced: set[str],
    train_now: bool = False,
) -> dict[str, Step]:
    """price position, and train-demand (when due, or ``train_now``) → forecast, as of the day
    after ``run_date``."""
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)
    position = price_position_step.with_options(refresh_cache="price-position" in forced, **options)
    forecast = forecast_step.with_options(refresh_cache="forecast" in forced, **options)
    positioned = night.add(position, ctx, as_of, cleaned)
    trained = night.add(
        train_demand_step.with_options(**options), ctx, run_date, cleaned, force=train_now
    )
    # A failed training leaves the champion in place: tonight's forecast still comes out.
    forecasted = night.add(forecast, ctx, as_of, cleaned, after=(trained,))
    return {"price-position": positioned, "train-demand": trained, "forecast": forecasted}


def feedback_steps(
    night: Night,
    settings: Settings,
    run_date: date,
    cleaned: list[Step],
    user_scores: Step,
    forced: set[str],
    train_now: bool = False,
) -> dict[str, Step]:
    """train-sentiment (when due, or ``train_now``) → feedback scores → product sentiment and
    the support queue (which also waits for tonight's user scores), as of the day after
    ``run_date``."""
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)
    score = feedback_step.with_options(refresh_cache="feedback" in forced, **options)
    sentiment = product_sentiment_step.with_options(
        refresh_cache="product-sentiment" in forced, **options
    )
    triage = support_queue_step.with_options(refresh_cache="support-queue" in forced, **options)
    trained = night.add(
        train_sentiment_step.with_options(**options), ctx, run_date, cleaned, force=train_now
    )
    # A failed training leaves the champion (or the lexicon) in place: scores still come out.
    scores = night.add(score, ctx, as_of, cleaned, after=(trained,))
    products = night.add(sentiment, ctx, as_of, scores)
    queue = night.add(triage, ctx, as_of, scores, after=(user_scores,))
    return {
        "train-sentiment": trained,
        "feedback": scores,
        "product-sentiment": products,
        "support-queue": queue,
    }


def recommend_steps(
    night: Night,
    settings: Settings,
    run_date: date,
    cleaned: list[Step],
    forced: set[str],
    train_now: bool = False,
) -> dict[str, Step]:
    """train-recommender (when due, or ``train_now``) → recommend, as of the day after
    ``run_date``."""
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)
    recommend = recommend_step.with_options(refresh_cache="recommend" in forced, **options)
    trained = night.add(
        train_recommender_step.with_options(**options), ctx, run_date, cleaned, force=train_now
    )
    # A failed training leaves the champion (or the heuristic) in place: lists still come out.
    lists = night.add(recommend, ctx, as_of, cleaned, after=(trained,))
    return {"train-recommender": trained, "recommend": lists}


def report_steps(
    night: Night, settings: Settings, run_date: date, steps: dict[str, dict], forced: set[str]
) -> dict[str, Step]:
    """report, after every other step: the report tables and page as of the day after
    ``run_date``, with whatever tonight produced, and a banner saying what did not run."""
    report = report_step.with_options(refresh_cache="report" in forced, **step_options(settings))
    upstream = tuple(step for group in steps.values() for step in group.values())
    ctx = model_context(settings)
    built = night.add(report, ctx, run_date, problems=SoFar(), after=upstream)
    return {"report": built, "report-artifacts": night.add(report_artifacts_step, built)}


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
) -> dict[str, dict]:
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

    def cleaned(sources: tuple[str, ...]) -> list[Step]:
        return [steps[source]["clean"] for source in sources]

    def train_now(step: str) -> bool:  # a train step named trains now, whatever the cadence
        return bool({step, "all"} & named)

    at = (night, settings, run_date)
    steps["models"] = model_steps(*at, cleaned(FEATURE_SOURCES), forced, train_now("train"))
    steps["market"] = market_steps(*at, cleaned(MARKET_SOURCES), forced, train_now("train-demand"))
    scores = steps["models"]["score"]
    feedback = cleaned(FEEDBACK_SOURCES)
    steps["feedback-models"] = feedback_steps(
        *at, feedback, scores, forced, train_now("train-sentiment")
    )
    steps["recommendations"] = recommend_steps(
        *at, cleaned(RECOMMEND_SOURCES), forced, train_now("train-recommender")
    )
    steps["report"] = report_steps(night, settings, run_date, steps, forced)
    night.run()
    try:
        summary = summary_of(steps)
    except NightlyFailed as exc:
        # Returned, not raised: each failure was logged once by its own step; a raise would
        # log it again with Prefect's traceback. Calling the flow still raises ``exc``.
        return Failed(message=str(exc), data=exc)
    page = (summary["report"].get("report") or {}).get("page")
    record_run_step(step_context(settings, SOURCES[0]), run_date, summary, page)
    return summary


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
            elif step.state is not None and step.state.is_completed():
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
