"""The nightly flow: every source is ingested, cleaned and checked, for one run date."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# real annotations when a deployment run loads this module from its file.
from datetime import date, timedelta
from pathlib import Path

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.settings import get_current_settings
from prefect.utilities.annotations import allow_failure

from flows.alerts import failure_alert, send_alert
from flows.graph import (
    FEATURE_SOURCES,
    FEEDBACK_SOURCES,
    MARKET_SOURCES,
    RECOMMEND_SOURCES,
    forced_steps,
)
from flows.settings import Settings, load_settings
from schemas.landing import SOURCES
from tasks.steps import (
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
from warehouse.manifest import code_version
from warehouse.store import Warehouse


class NightlyFailed(Exception):
    """One or more steps failed; the others completed and their results are cached."""

    def __init__(self, message: str, failed_steps: list[str]) -> None:
        super().__init__(message)
        self.failed_steps = failed_steps


def step_options(settings: Settings) -> dict:
    """Retries every step gets (on I/O errors only), each delay three times the last."""
    run = settings.run
    delays = [run.retry_delay_seconds * 3**i for i in range(run.io_retries)]
    # Time limits are the steps' own (tasks/deadline.py): Prefect cannot stop a thread.
    return {"retries": run.io_retries, "retry_delay_seconds": delays or 0}


def step_timeout_seconds(settings: Settings) -> float | None:
    """Each step's own time limit (tasks/deadline.py): Prefect cannot stop a thread."""
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
    settings: Settings,
    run_date: date,
    cleaned: list[PrefectFuture],
    forced: set[str],
    train_now: bool = False,
) -> dict[str, PrefectFuture]:
    """features → train (when due, or ``train_now``) → score, as of the day after ``run_date``.

    Recomputing an upstream step does not make training due: only naming ``train`` does.
    """
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)  # everything up to and including the run date
    features = features_step.with_options(refresh_cache="features" in forced, **options).submit(
        ctx, as_of, cleaned
    )
    trained = train_step.with_options(**options).submit(ctx, run_date, features, force=train_now)
    # A failed training leaves the champion in place: tonight's scores still come out.
    scored = score_step.with_options(refresh_cache="score" in forced, **options).submit(
        ctx, features, wait_for=[allow_failure(trained)]
    )
    return {"features": features, "train": trained, "score": scored}


def market_steps(
    settings: Settings,
    run_date: date,
    cleaned: list[PrefectFuture],
    forced: set[str],
    train_now: bool = False,
) -> dict[str, PrefectFuture]:
    """price position, and train-demand (when due, or ``train_now``) → forecast, as of the day
    after ``run_date``."""
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)
    position = price_position_step.with_options(
        refresh_cache="price-position" in forced, **options
    ).submit(ctx, as_of, cleaned)
    trained = train_demand_step.with_options(**options).submit(
        ctx, run_date, cleaned, force=train_now
    )
    # A failed training leaves the champion in place: tonight's forecast still comes out.
    forecast = forecast_step.with_options(refresh_cache="forecast" in forced, **options).submit(
        ctx, as_of, cleaned, wait_for=[allow_failure(trained)]
    )
    return {"price-position": position, "train-demand": trained, "forecast": forecast}


def feedback_steps(
    settings: Settings,
    run_date: date,
    cleaned: list[PrefectFuture],
    user_scores: PrefectFuture,
    forced: set[str],
    train_now: bool = False,
) -> dict[str, PrefectFuture]:
    """train-sentiment (when due, or ``train_now``) → feedback scores → product sentiment and
    the support queue (which also waits for tonight's user scores), as of the day after
    ``run_date``."""
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)
    trained = train_sentiment_step.with_options(**options).submit(
        ctx, run_date, cleaned, force=train_now
    )
    # A failed training leaves the champion (or the lexicon) in place: scores still come out.
    scores = feedback_step.with_options(refresh_cache="feedback" in forced, **options).submit(
        ctx, as_of, cleaned, wait_for=[allow_failure(trained)]
    )
    products = product_sentiment_step.with_options(
        refresh_cache="product-sentiment" in forced, **options
    ).submit(ctx, as_of, scores)
    queue = support_queue_step.with_options(
        refresh_cache="support-queue" in forced, **options
    ).submit(ctx, as_of, scores, wait_for=[allow_failure(user_scores)])
    return {
        "train-sentiment": trained,
        "feedback": scores,
        "product-sentiment": products,
        "support-queue": queue,
    }


def recommend_steps(
    settings: Settings,
    run_date: date,
    cleaned: list[PrefectFuture],
    forced: set[str],
    train_now: bool = False,
) -> dict[str, PrefectFuture]:
    """train-recommender (when due, or ``train_now``) → recommend, as of the day after
    ``run_date``."""
    ctx, options = model_context(settings), step_options(settings)
    as_of = run_date + timedelta(days=1)
    trained = train_recommender_step.with_options(**options).submit(
        ctx, run_date, cleaned, force=train_now
    )
    # A failed training leaves the champion (or the heuristic) in place: lists still come out.
    lists = recommend_step.with_options(refresh_cache="recommend" in forced, **options).submit(
        ctx, as_of, cleaned, wait_for=[allow_failure(trained)]
    )
    return {"train-recommender": trained, "recommend": lists}


def report_steps(
    settings: Settings, run_date: date, futures: dict[str, dict], forced: set[str]
) -> dict[str, PrefectFuture]:
    """report, after every model step: the report tables and page as of the day after
    ``run_date``, with whatever tonight produced (a failed step leaves its part out)."""
    upstream = [
        allow_failure(f)
        for group in ("models", "market", "feedback-models", "recommendations")
        for f in futures[group].values()
    ]
    built = report_step.with_options(
        refresh_cache="report" in forced, **step_options(settings)
    ).submit(model_context(settings), run_date, wait_for=upstream)
    return {"report": built, "report-artifacts": report_artifacts_step.submit(built)}


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
    futures = {}
    for source in SOURCES:
        ctx = step_context(settings, source)
        ingest = ingest_step.with_options(
            refresh_cache=f"ingest-{source}" in forced, **step_options(settings)
        )
        clean = clean_step.with_options(
            refresh_cache=f"clean-{source}" in forced, **step_options(settings)
        )
        ingested = ingest.submit(ctx, source, run_date, force=f"ingest-{source}" in forced)
        cleaned = clean.submit(ctx, source, run_date, ingested)
        checked = check_step.submit(ctx, source, run_date, ingested, cleaned)
        futures[source] = {"ingest": ingested, "clean": cleaned, "check": checked}
    cleaned = [futures[source]["clean"] for source in FEATURE_SOURCES]
    named = {n.strip() for n in force_steps or []}
    futures["models"] = model_steps(
        settings, run_date, cleaned, forced, bool({"train", "all"} & named)
    )
    market_cleaned = [futures[source]["clean"] for source in MARKET_SOURCES]
    futures["market"] = market_steps(
        settings, run_date, market_cleaned, forced, bool({"train-demand", "all"} & named)
    )
    feedback_cleaned = [futures[source]["clean"] for source in FEEDBACK_SOURCES]
    futures["feedback-models"] = feedback_steps(
        settings,
        run_date,
        feedback_cleaned,
        futures["models"]["score"],
        forced,
        bool({"train-sentiment", "all"} & named),
    )
    recommend_cleaned = [futures[source]["clean"] for source in RECOMMEND_SOURCES]
    futures["recommendations"] = recommend_steps(
        settings, run_date, recommend_cleaned, forced, bool({"train-recommender", "all"} & named)
    )
    futures["report"] = report_steps(settings, run_date, futures, forced)
    summary = summary_of(futures)
    page = (summary["report"].get("report") or {}).get("page")
    record_run_step(step_context(settings, SOURCES[0]), run_date, summary, page)
    return summary


def summary_of(futures: dict) -> dict[str, dict]:
    """Per source, each step's report; raises NightlyFailed naming every failed step."""
    summary: dict[str, dict] = {}
    failures: list[str] = []
    for source, steps in futures.items():
        entry: dict = {}
        for name, future in steps.items():
            future.wait()
            state = future.state
            if state.is_completed():
                result = future.result()
                entry[name] = (
                    result.model_dump(mode="json") if hasattr(result, "model_dump") else result
                )
            elif state.name != "NotReady":  # a step whose upstream failed says nothing new
                run = (
                    name
                    if source
                    in ("models", "market", "feedback-models", "recommendations", "report")
                    else f"{name}-{source}"
                )
                failures.append(f"{run}: {state.message or state.name}")
        summary[source] = entry
    if failures:
        message = "steps failed:\n" + "\n".join(f"  - {f}" for f in failures)
        raise NightlyFailed(message, [f.split(":", 1)[0] for f in failures])
    return summary
