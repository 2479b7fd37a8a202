"""Prefect tasks: thin wrappers around the units, with cache keys built from their inputs.

A step's cache key is its name + partition + code version + settings + the fingerprints of its
inputs, so a retried or repeated run reuses every step whose inputs did not change.
A cached result whose outputs have since been deleted is dropped before Prefect looks it up, so
the step recomputes instead of returning a manifest that points at nothing.
"""

from __future__ import annotations

import errno
import json
import logging
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from prefect import Task, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from pydantic import BaseModel, Field

from nightowl.errors import NotEnoughHistory
from nightowl.flows.summary import (
    delivery_notes,
    health_notes,
    rule_notes,
    scoring_paths,
    summary_markdown,
    summary_rows,
)
from nightowl.schemas.config import (
    CLEAN_CHUNK_ROWS,
    FUTURE_HORIZON_DAYS,
    RAW_COMPRESSION,
    CheckSettings,
    EvaluateSettings,
    FeedbackSettings,
    HealthSettings,
    MarketSettings,
    ModelSettings,
    RawCompression,
    RecommendSettings,
    ReportSettings,
)
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.behaviour import units as propensity
from nightowl.tasks.common.deadline import time_limit
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.common.reads import catalogue_before
from nightowl.tasks.common.reports import TableReport
from nightowl.tasks.feedback import units as feedback
from nightowl.tasks.health import units as health
from nightowl.tasks.ingest import units
from nightowl.tasks.market import units as demand
from nightowl.tasks.models.lifecycle import TrainOutcome
from nightowl.tasks.recommend import units as recommendations
from nightowl.tasks.report import units as _report
from nightowl.tasks.report.briefs import brief_writer
from nightowl.warehouse.landing import landing_files
from nightowl.warehouse.ledger import Ledger
from nightowl.warehouse.manifest import combined_hash
from nightowl.warehouse.registry import Registry
from nightowl.warehouse.store import Warehouse, page_url_path
from nightowl.warehouse.tables import USER_SCORES

log = logging.getLogger("nightowl")
#: What one training step reports: the outcome every model has, and its own figures.
Trained = TypeVar("Trained", bound=TrainOutcome)


class _Context(BaseModel):
    """What every step needs from the settings: small, serialisable, part of the cache key."""

    data_root: str
    code_version: str
    timeout_seconds: float | None = None

    def warehouse(self) -> Warehouse:
        return Warehouse(Path(self.data_root), self.code_version)


class StepContext(_Context):
    """The settings a per-source step (ingest, clean, check) needs."""

    config_dir: str
    tolerance_hours: float
    horizon_days: int = FUTURE_HORIZON_DAYS
    #: Raw rows cleaned at once (bounds memory; does not change what is written).
    chunk_rows: int = CLEAN_CHUNK_ROWS
    raw_compression: RawCompression = RAW_COMPRESSION
    source: SourceConfig
    checks: CheckSettings = Field(default_factory=CheckSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)


def _landing_fingerprint(ctx: StepContext, source: str, run_date: date) -> str:
    root, config_dir = Path(ctx.data_root), Path(ctx.config_dir)
    # Ingest sees files as of the latest date ever run (see units.ingest_source).
    high = ctx.warehouse().high_water()
    visible = max(run_date, date.fromisoformat(high)) if high else run_date
    files = landing_files(source, ctx.source, visible, root, config_dir)
    stats = [(f.path, f.path.stat()) for f in files]
    return combined_hash([f"{p}|{s.st_size}|{s.st_mtime_ns}" for p, s in stats])


def _ledger_fingerprint(wh: Warehouse, source: str) -> str:
    """Every file the clean step may read: a later night's late rows change an older day too."""
    return combined_hash(
        [f"{e.sha256}:{e.seq}:{','.join(e.copies)}" for e in Ledger(wh).entries(source)]
    )


def _partition_there(layer: str) -> Callable[[Any, Warehouse], bool]:
    """Whether the ``as_of`` partition a report names is published, with the same content."""

    def there(report: Any, wh: Warehouse) -> bool:
        m = wh.manifest(layer, report.table, {"as_of": report.as_of})
        return m is not None and m.content_hash == report.content_hash

    return there


def _report_there(report: _report.ReportReport, wh: Warehouse) -> bool:
    return Path(report.page).exists() and all(
        (m := wh.manifest("reports", t, {"as_of": report.as_of})) is not None
        and m.content_hash == built["content_hash"]
        for t, built in report.tables.items()
    )


def _clean_there(report: units.CleanReport, wh: Warehouse) -> bool:
    return all(
        (m := wh.manifest("clean", report.table, {"dt": dt})) is not None
        and m.content_hash == digest
        for dt, digest in report.partitions.items()
    )


def _raw_there(report: units.IngestReport, wh: Warehouse) -> bool:
    return all((wh.root / f).exists() for e in report.files for f in e.raw_files)


#: How to tell that the outputs of a cached step's report are still there, per report type.
#: Every cached step's report type must be here (tests/flows/test_steps.py checks it): a
#: type without an entry is never taken from the cache.
OUTPUT_CHECKS: dict[type, Callable[[Any, Warehouse], bool]] = {
    units.IngestReport: _raw_there,
    units.CleanReport: _clean_there,
    propensity.FeatureReport: _partition_there("features"),
    propensity.ScoreReport: _partition_there("predictions"),
    demand.PricePositionReport: _partition_there("predictions"),
    demand.ForecastReport: _partition_there("predictions"),
    TableReport: _partition_there("predictions"),
    _report.ReportReport: _report_there,
}


def _outputs_exist(report: Any, wh: Warehouse) -> bool:
    check = OUTPUT_CHECKS.get(type(report))
    return check is not None and check(report, wh)


def _valid_key(context: TaskRunContext, key: str, wh: Warehouse) -> str:
    """``key``, after forgetting its cached result if that result's outputs are gone."""
    store = context.result_store
    if store is None or not store.exists(key):
        return key
    try:
        result = store.read(key).result
    except Exception:  # an unreadable record is as good as a dangling one
        readable = False
    else:
        readable = True
    if readable and (result is None or _outputs_exist(result, wh)):  # None: nothing was written
        return key
    log.info("the cached result of %s points at missing outputs; recomputing", context.task.name)
    basepath = getattr(store.result_storage, "basepath", None)
    if basepath is not None:
        (Path(basepath).expanduser() / key).unlink(missing_ok=True)
        return key
    return combined_hash([key, "recompute", str(uuid.uuid4())])  # storage we cannot delete from


def _key(context: TaskRunContext, ctx: _Context, *reads: str) -> str:
    """A step's cache key: its task, data root and code version, then its settings and the
    fingerprints of what it reads — forgetting a cached result whose outputs are gone."""
    key = combined_hash([context.task.name, ctx.data_root, ctx.code_version, *reads])
    return _valid_key(context, key, ctx.warehouse())


def ingest_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of an ingest: settings, code and the landing files that have arrived."""
    ctx: StepContext = params["ctx"]
    source, run_date = params["source"], params["run_date"]
    return _key(
        context,
        ctx,
        source,
        run_date.isoformat(),
        ctx.source.model_dump_json(),
        _landing_fingerprint(ctx, source, run_date),
        ctx.feedback.phone_region if source == "feedback" else "",
        ctx.raw_compression,
    )


def clean_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of a clean: settings, code, the ingest report and every raw file it may read."""
    ctx: StepContext = params["ctx"]
    source, run_date = params["source"], params["run_date"]
    ingested: units.IngestReport = params["ingested"]
    wh = ctx.warehouse()
    by_source = {
        "market_prices": str(ctx.market.price_outlier_ratio),
        "feedback": f"{ctx.feedback.max_text_chars}|{ctx.feedback.phone_region}",
    }
    seen = ingested.model_dump_json(exclude={"newly_ingested", "skipped", "notes", "seconds"})
    return _key(
        context,
        ctx,
        source,
        run_date.isoformat(),
        ctx.source.model_dump_json(),
        str(ctx.tolerance_hours),
        str(ctx.horizon_days),
        str(wh.high_water()),
        by_source.get(source, ""),
        seen,
        _ledger_fingerprint(wh, source),
    )


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a step only when it failed on I/O (a full disk, a flaky mount), not on bad data,
    nor on a file it may not write (no retry grants the permission)."""
    try:
        state.result()
    except OSError as exc:
        return not isinstance(exc, PermissionError) and exc.errno != errno.EROFS
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
            ctx.warehouse(),
            source,
            ctx.source,
            run_date,
            Path(ctx.config_dir),
            force=force,
            phone_region=ctx.feedback.phone_region,
            raw_compression=ctx.raw_compression,
        )


@task(
    name="check",
    task_run_name="check-{source}",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
)
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
    key = f"checks-{source.replace('_', '-')}"
    _only_newest_artifact(
        key, create_table_artifact(rows, key=key, description=f"{source} on {run_date}")
    )
    for result in results:
        if result.status == "warn":
            log.warning("check %s: %s", result.check, result.message)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        raise units.ChecksFailed("; ".join(f"check {r.check} failed: {r.message}" for r in failed))
    return rows


@task(name="record-run", cache_policy=NO_CACHE)
def record_run_step(
    ctx: StepContext, run_date: date, summary: dict, report_page: str | None = None
) -> None:
    """Mark the run date complete (what `nightowl backfill` skips) and publish its summary.

    The table artifact's key stays the same every night, so the UI shows its history; a Retry
    replaces the attempt before's (one per key and flow run).
    """
    wh = ctx.warehouse()
    rows = summary_rows(summary)
    steps = create_table_artifact(rows, key="nightly-steps", description=f"steps of {run_date}")
    _only_newest_artifact("nightly-steps", steps)
    told = create_markdown_artifact(
        summary_markdown(
            run_date.isoformat(),
            rows,
            str(wh.root),
            report_page,
            scoring_paths(summary),
            delivery_notes(summary) + rule_notes(summary) + health_notes(summary),
        ),
        key="nightly-summary",
        description=f"nightly run for {run_date}",
    )
    _only_newest_artifact("nightly-summary", told)
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
        return units.clean_source(
            wh,
            source,
            ctx.source,
            run_date,
            ctx.tolerance_hours,
            ctx.market.price_outlier_ratio,
            ctx.feedback,
            ctx.chunk_rows,
            ctx.horizon_days,
        )


# ---- model steps ----------------------------------------------------------------------------


class ModelContext(_Context):
    """The settings the model steps (features, train, score) need."""

    model: ModelSettings = Field(default_factory=ModelSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    timezone: str = "UTC"
    config_dir: str = "."
    #: Where the bucketed steps run their buckets (does not change what they write).
    fanout: Fanout = Field(default_factory=Fanout)


def features_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of the user features: code and the manifests of every clean partition read."""
    ctx: ModelContext = params["ctx"]
    as_of: date = params["as_of"]
    wh = ctx.warehouse()
    refs = propensity.feature_inputs(wh, as_of)
    return _key(context, ctx, as_of.isoformat(), *(r.content_hash for r in refs))


def score_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of the scores: the features partition, the champion and the scoring settings."""
    ctx: ModelContext = params["ctx"]
    features: propensity.FeatureReport | None = params["features"]
    wh = ctx.warehouse()
    champion = Registry(wh).champion(propensity.MODEL)
    seen = features.model_dump_json(include={"as_of", "content_hash"}) if features else "none"
    version = champion.version if champion else "none"
    return _key(context, ctx, seen, version, ctx.model.model_dump_json())


@task(
    name="features",
    task_run_name="features-user",
    cache_key_fn=features_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def features_step(
    ctx: ModelContext, as_of: date, cleaned: list[Any]
) -> propensity.FeatureReport | None:
    """Clean events, items, market prices and feedback before ``as_of`` → ``features/user``.

    ``cleaned`` holds the clean steps' reports, so features wait for the tables they read.
    """
    with time_limit(ctx.timeout_seconds, "features-user"):
        wh, per_bucket = ctx.warehouse(), ctx.model.features_bucket_events
        made = _unless_young(
            "user features",
            lambda: propensity.user_features_table(wh, as_of, per_bucket, ctx.fanout),
        )
        return made[1] if made is not None else None


@task(
    name="train",
    task_run_name="train-propensity",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
)
def train_step(
    ctx: ModelContext,
    last_day: date,
    features: propensity.FeatureReport | None,
    force: bool = False,
) -> propensity.TrainReport:
    """Train, export, parity-check and register a model when none exists or the champion is due.

    Not cached: whether to train depends on the registry, which this step itself changes.
    """

    def summary(r: propensity.TrainReport) -> str:
        auc = r.metrics.get("model", {}).get("roc_auc", float("nan"))
        return f"held-out AUC {auc:.4f}, parity {r.parity_max_diff:.2g}"

    return _train_when_due(
        ctx,
        "propensity",
        lambda: propensity.train_propensity(
            ctx.warehouse(), last_day, ctx.model, only_if_due=not force
        ),
        propensity.TrainReport,
        summary,
    )


def _unless_young(what: str, make: Callable[[], Any]) -> Any:
    """``make()``, or None and a warning when the warehouse is too young to make ``what`` (not
    an error: a new shop has no history yet)."""
    try:
        return make()
    except NotEnoughHistory as exc:
        log.warning("no %s yet: %s", what, exc)
        return None


def _train_when_due(
    ctx: ModelContext,
    model: str,
    train: Callable[[], Trained],
    outcome: type[Trained],
    summary: Callable[[Trained], str],
) -> Trained:
    """Run ``train`` within the step's time limit and log what came of it; a young warehouse
    (NotEnoughHistory) is a warning and an untrained outcome, not a failure."""
    with time_limit(ctx.timeout_seconds, f"train-{model}"):
        try:
            report = train()
        except NotEnoughHistory as exc:
            log.warning("no %s model trained yet: %s", model, exc)
            return outcome(trained=False, reason=str(exc))
    if report.trained:
        log.info("trained %s %s (%s): %s", model, report.version, summary(report), report.reason)
    else:
        log.info("no %s training tonight: %s", model, report.reason)
    return report


@task(
    name="score",
    task_run_name="score-users",
    cache_key_fn=score_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def score_step(
    ctx: ModelContext, as_of: date, features: propensity.FeatureReport | None
) -> propensity.ScoreReport | None:
    """The champion scores every user featurized as of ``as_of`` → ``predictions/user_scores``."""
    wh = ctx.warehouse()
    if features is None:
        log.warning("no user_scores: there are no user features (see the features step)")
        return None
    if Registry(wh).champion(propensity.MODEL) is None:
        log.warning("no user_scores yet: no model has been trained (see the train step)")
        return None
    with time_limit(ctx.timeout_seconds, "score-users"):
        report = propensity.score_users(wh, as_of, ctx.model, ctx.fanout)
    log.info(
        "scored %s users with %s, %s graph on %s (nodes: %s)",
        f"{report.rows:,}",
        report.model_version,
        report.graph,
        report.provider,
        report.placement,
    )
    return report


# ---- market steps ---------------------------------------------------------------------------


def market_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of a market table: step, code, settings, the champion (for the forecast) and
    the items files and clean partitions it reads."""
    ctx: ModelContext = params["ctx"]
    as_of: date = params["as_of"]
    wh = ctx.warehouse()
    champion = Registry(wh).champion(demand.MODEL) if context.task.name == "forecast" else None
    return _key(
        context,
        ctx,
        as_of.isoformat(),
        ctx.market.model_dump_json(),
        ctx.model.provider,
        ctx.model.graph,
        champion.version if champion else "none",
        *(r.content_hash for r in demand.market_refs(wh, as_of)),
    )


@task(
    name="price-position",
    task_run_name="price-position",
    cache_key_fn=market_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def price_position_step(
    ctx: ModelContext, as_of: date, cleaned: list[Any]
) -> demand.PricePositionReport | None:
    """Our prices and competitor quotes before ``as_of`` → ``predictions/price_position``."""
    with time_limit(ctx.timeout_seconds, "price-position"):
        wh = ctx.warehouse()
        report = _unless_young(
            "price_position", lambda: demand.price_position_table(wh, as_of, ctx.market)
        )
    if report is None:
        return None
    log.info(
        "price position of %s items: %s above the competitor median", report.rows, report.overpriced
    )
    return report


@task(
    name="train-demand",
    task_run_name="train-demand",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
)
def train_demand_step(
    ctx: ModelContext, last_day: date, cleaned: list[Any], force: bool = False
) -> demand.DemandTrainReport:
    """Backtest, train, export, parity-check and register a demand model when one is due.

    Not cached: whether to train depends on the registry, which this step itself changes.
    """

    def summary(r: demand.DemandTrainReport) -> str:
        model, ma = r.metrics["model"], r.metrics["moving_average_28d"]
        return f"backtest WAPE {model['wape']:.3f} vs 28-day average {ma['wape']:.3f}"

    return _train_when_due(
        ctx,
        "demand",
        lambda: demand.train_demand(ctx.warehouse(), last_day, ctx.market, only_if_due=not force),
        demand.DemandTrainReport,
        summary,
    )


@task(
    name="forecast",
    task_run_name="forecast",
    cache_key_fn=market_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def forecast_step(
    ctx: ModelContext, as_of: date, cleaned: list[Any]
) -> demand.ForecastReport | None:
    """The demand champion forecasts every active item → ``demand_forecast``,
    ``category_forecast`` and ``price_scenarios``."""
    wh = ctx.warehouse()
    if Registry(wh).champion(demand.MODEL) is None:
        log.warning("no demand_forecast yet: no demand model has been trained (see train-demand)")
        return None
    with time_limit(ctx.timeout_seconds, "forecast"):
        report = demand.forecast_demand(wh, as_of, ctx.market, ctx.model)
    log.info(
        "forecast %s item-days with %s, %s graph on %s",
        f"{report.rows:,}",
        report.model_version,
        report.graph,
        report.provider,
    )
    return report


# ---- feedback steps -------------------------------------------------------------------------


def feedback_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of a feedback table: step, code, settings, the sentiment champion, and what
    it reads (clean feedback; feedback_scores, items, user_scores and the FAQ file)."""
    ctx: ModelContext = params["ctx"]
    as_of: date = params["as_of"]
    wh = ctx.warehouse()
    name = context.task.name
    reads: list[str] = []
    if name == "feedback":
        # The version that will score this date (a past one may not be the champion's).
        scorer = feedback.scoring_model(Registry(wh), as_of)
        reads = [scorer.version if scorer else feedback.lexicon_version()]
        reads += [m.content_hash for m in feedback.feedback_partitions(wh, as_of, ctx.feedback)]
    else:
        scores: TableReport | None = params.get("scores")
        reads = [scores.content_hash if scores else "none"]
        if name == "product-sentiment":
            reads += [r.content_hash for r in catalogue_before(wh, as_of)[1]]
        else:
            newest = wh.manifests(USER_SCORES.layer, USER_SCORES.name)[-1:]
            reads += [m.content_hash for m in newest]
            reads.append(feedback.faq_fingerprint(wh, ctx.config_dir, ctx.feedback.faq))
    return _key(context, ctx, as_of.isoformat(), ctx.feedback.model_dump_json(), *reads)


@task(
    name="train-sentiment",
    task_run_name="train-sentiment",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
)
def train_sentiment_step(
    ctx: ModelContext, last_day: date, cleaned: list[Any], force: bool = False
) -> feedback.SentimentTrainReport:
    """Train, export, parity-check and register a sentiment model when one is due.

    Not cached: whether to train depends on the registry, which this step itself changes.
    """

    def summary(r: feedback.SentimentTrainReport) -> str:
        model, lexicon = r.metrics["model"], r.metrics["lexicon"]
        return f"held-out macro-F1 {model['macro_f1']:.3f} vs lexicon {lexicon['macro_f1']:.3f}"

    return _train_when_due(
        ctx,
        "sentiment",
        lambda: feedback.train_sentiment(
            ctx.warehouse(), last_day, ctx.feedback, only_if_due=not force
        ),
        feedback.SentimentTrainReport,
        summary,
    )


@task(
    name="feedback",
    task_run_name="feedback-scores",
    cache_key_fn=feedback_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def feedback_step(ctx: ModelContext, as_of: date, cleaned: list[Any]) -> TableReport | None:
    """The sentiment champion (or the lexicon) scores recent feedback → ``feedback_scores``."""
    with time_limit(ctx.timeout_seconds, "feedback-scores"):
        report = _unless_young(
            "feedback_scores",
            lambda: feedback.feedback_scores_table(ctx.warehouse(), as_of, ctx.feedback),
        )
    if report is None:
        return None
    log.info(
        "scored %s feedback items with %s (%s)",
        f"{report.rows:,}",
        report.model_version,
        report.notes["sentiment_source"],
    )
    return report


@task(
    name="product-sentiment",
    task_run_name="product-sentiment",
    cache_key_fn=feedback_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def product_sentiment_step(
    ctx: ModelContext, as_of: date, scores: TableReport | None
) -> TableReport | None:
    """Feedback scores per product and category and day → ``product_sentiment``."""
    if scores is None:
        log.warning("no product_sentiment: there are no feedback_scores (see the feedback step)")
        return None
    with time_limit(ctx.timeout_seconds, "product-sentiment"):
        report = feedback.product_sentiment_table(ctx.warehouse(), as_of, ctx.feedback, scores)
    log.info("product_sentiment: %s item/category-days", f"{report.rows:,}")
    return report


@task(
    name="support-queue",
    task_run_name="support-queue",
    cache_key_fn=feedback_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def support_queue_step(
    ctx: ModelContext, as_of: date, scores: TableReport | None
) -> TableReport | None:
    """Recent support tickets with urgency and a suggested answer → ``support_queue``."""
    if scores is None:
        log.warning("no support_queue: there are no feedback_scores (see the feedback step)")
        return None
    with time_limit(ctx.timeout_seconds, "support-queue"):
        report = feedback.support_queue_table(
            ctx.warehouse(), as_of, ctx.feedback, scores, ctx.config_dir
        )
    log.info(
        "support_queue: %s tickets, %s with a suggested answer",
        report.rows,
        report.notes["with_answer"],
    )
    # The morning's first look, in the UI beside the run: the ten most urgent tickets.
    top = feedback.queue_top(ctx.warehouse(), report, 10)
    if top:
        create_table_artifact(top, key="support-queue", description=f"as of {report.as_of}")
    return report


# ---- recommendation steps -------------------------------------------------------------------


def recommend_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of the recommendations: code, settings, the ranker allowed to see the date, and
    the clean partitions they read."""
    ctx: ModelContext = params["ctx"]
    as_of: date = params["as_of"]
    wh = ctx.warehouse()
    ranker = recommendations.scoring_model(Registry(wh), as_of)
    return _key(
        context,
        ctx,
        as_of.isoformat(),
        ctx.recommend.model_dump_json(),
        ctx.model.provider,
        ctx.model.graph,
        ranker.version if ranker else recommendations.HEURISTIC,
        *(r.content_hash for r in recommendations.input_refs(wh, as_of, ctx.recommend)),
    )


@task(
    name="train-recommender",
    task_run_name="train-recommender",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
)
def train_recommender_step(
    ctx: ModelContext, last_day: date, cleaned: list[Any], force: bool = False
) -> recommendations.RecommenderTrainReport:
    """Train, export, parity-check and register the ranker when one is due.

    Not cached: whether to train depends on the registry, which this step itself changes.
    """

    def summary(r: recommendations.RecommenderTrainReport) -> str:
        k, m = r.top_k, r.metrics
        best = max(m[b]["all_ndcg"] or 0.0 for b in recommendations.BASELINES)
        return f"held-out NDCG@{k} {m['model']['all_ndcg']:.4f} vs best baseline {best:.4f}"

    return _train_when_due(
        ctx,
        "recommender",
        lambda: recommendations.train_recommender(
            ctx.warehouse(), last_day, ctx.recommend, only_if_due=not force
        ),
        recommendations.RecommenderTrainReport,
        summary,
    )


@task(
    name="recommend",
    task_run_name="recommend",
    cache_key_fn=recommend_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def recommend_step(ctx: ModelContext, as_of: date, cleaned: list[Any]) -> TableReport | None:
    """Top-K items per active user, ranked by the recommender → ``recommendations``."""
    with time_limit(ctx.timeout_seconds, "recommend"):
        report = _unless_young(
            "recommendations",
            lambda: recommendations.recommendations_table(
                ctx.warehouse(), as_of, ctx.recommend, ctx.model, ctx.fanout
            ),
        )
    if report is None:
        return None
    log.info(
        "recommended %s items to %s users with %s",
        f"{report.rows:,}",
        f"{report.notes['users']:,}",
        report.model_version,
    )
    # Beside the run in the UI: which sources tonight's lists came from.
    mix = recommendations.source_mix(ctx.warehouse(), report)
    if mix:
        create_table_artifact(
            mix,
            key="recommendations",
            description=f"as of {report.as_of}: {report.notes['users']:,} users, "
            f"ranked by {report.model_version}",
        )
    return report


# ---- model health ----------------------------------------------------------------------------


@task(
    name="model-health",
    task_run_name="model-health",
    # Not cached: it finds what changed itself (a fingerprint per judged night) and is cheap
    # when nothing did.
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
)
def model_health_step(ctx: ModelContext, as_of: date) -> health.HealthReport:
    """Judge the served nights whose outcomes came in (``model_health``), tonight's drift from
    each champion's training data (``model_drift``), and what to alert about."""
    sections = health.Sections(ctx.model, ctx.recommend, ctx.market, ctx.feedback, ctx.health)
    with time_limit(ctx.timeout_seconds, "model-health"):
        report = health.model_health(ctx.warehouse(), as_of, sections)
    judged = ", ".join(f"{night} ({', '.join(m)})" for night, m in report.judged.items())
    log.info(
        "model health: judged %d served night(s)%s, %d unchanged; %d drift row(s), %d drifted",
        len(report.judged),
        f": {judged}" if judged else "",
        report.unchanged,
        report.drift_rows,
        report.drifted,
    )
    return report


# ---- the report -----------------------------------------------------------------------------


def report_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key of the report: code, settings, and every partition it reads."""
    ctx: ModelContext = params["ctx"]
    run_date: date = params["run_date"]
    wh = ctx.warehouse()
    try:  # a plugged-in writer says by its name when its copy changed
        writer = brief_writer(ctx.report.brief_writer).name
    except ValueError:  # the step itself will say why it cannot be loaded
        writer = "unloadable"
    return _key(
        context,
        ctx,
        run_date.isoformat(),
        ctx.report.model_dump_json(),
        writer,
        ctx.timezone,
        _report.report_fingerprint(wh, run_date + timedelta(days=1)),
        json.dumps(params.get("problems") or {}, sort_keys=True),
    )


@task(
    name="report",
    task_run_name="report",
    cache_key_fn=report_key,
    persist_result=True,
    retry_condition_fn=retry_on_io_error,
)
def report_step(
    ctx: ModelContext, run_date: date, problems: dict[str, str] | None = None
) -> _report.ReportReport | None:
    """The report tables as of the day after ``run_date``, and the page people read, linked
    from the run in the UI. Runs after every other step, with what they produced; ``problems``
    (step run → what went wrong) heads the page."""
    with time_limit(ctx.timeout_seconds, "report"):
        built = _unless_young(
            "report",
            lambda: _report.build_report(
                ctx.warehouse(), run_date, ctx.report, ctx.timezone, problems or {}, ctx.health
            ),
        )
    if built is None:
        return None
    for line in built.missing:
        log.warning("report: %s", line)
    log.info("report for %s: %s", run_date, built.page)
    return built


@task(name="report-artifacts", task_run_name="report-artifacts", cache_policy=NO_CACHE)
def report_artifacts_step(built: _report.ReportReport | None) -> None:
    """Link tonight's report page from the run in the UI, with what changed. Not cached, so a
    run whose report came from the cache links it too; run again in the same flow run (a Retry),
    it replaces the artifacts of the attempt before instead of adding a second of each."""
    if built is None:
        return
    link = report_link(built.page)
    where = (
        "served by the run's nightowl server"
        if link.startswith("http")
        else ("a file on the machine that ran the flow")
    )
    log.info("report page for %s: %s", built.run_date, link)
    newest = create_link_artifact(
        link,
        link_text=f"nightowl report {built.run_date}",
        key="nightly-report",
        description=f"the morning report for {built.run_date}: {built.page} ({where})",
    )
    _only_newest_artifact("nightly-report", newest)
    newest = create_markdown_artifact(
        report_markdown(built, link),
        key="report-summary",
        description=f"what changed on {built.run_date}",
    )
    _only_newest_artifact("report-summary", newest)


def report_link(page: str) -> str:
    """Where a browser opens the report ``page``: its address on the nightowl server this run
    reports to (``<PREFECT_UI_URL>/reports/<date>/index.html``; PREFECT_UI_URL is PREFECT_API_URL
    without ``/api`` unless set) when that server serves this very file; else ``file://…`` (no
    server named, a plain Prefect server, or one on another machine or data root)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not PREFECT_API_URL.value() or not ui:  # a temporary server for this run serves no pages
        return Path(page).as_uri()
    url = ui.rstrip("/") + page_url_path(page)
    problem = _not_served(url, Path(page))
    if problem:
        log.info("report page linked as a file: %s does not serve it (%s)", url, problem)
        return Path(page).as_uri()
    return url


def _not_served(url: str, page: Path) -> str | None:
    """Why ``url`` is not ``page`` (None: it is), asked with one HEAD: a nightowl server answers
    with the file's size and modification time; any other page (a plain Prefect server's UI, the
    same date in another data root) differs in them."""
    from email.utils import formatdate

    import httpx
    from prefect.settings import PREFECT_API_AUTH_STRING

    auth = PREFECT_API_AUTH_STRING.value()  # the server's user:password, if it asks for one
    try:
        size, modified = page.stat().st_size, formatdate(page.stat().st_mtime, usegmt=True)
        answer = httpx.head(
            url,
            timeout=5,
            headers={"accept-encoding": "identity"},  # the size as on disk
            auth=tuple(auth.split(":", 1)) if auth else None,
        )
    except (OSError, httpx.HTTPError) as exc:
        return str(exc) or type(exc).__name__
    served = (answer.headers.get("content-length"), answer.headers.get("last-modified"))
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}"
    if served != (str(size), modified):
        return f"another file: {served[0]} bytes of {served[1]}, not {size} of {modified}"
    return None


def _only_newest_artifact(key: str, newest: object) -> None:
    """Delete this flow run's other artifacts under ``key``, so that a step run again in the
    same flow run (a Retry) leaves one per key, the current one, first to open in the UI."""
    import contextlib

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.exceptions import ObjectNotFound
    from prefect.runtime import flow_run

    if not flow_run.id:  # called outside a flow run: nothing of an earlier attempt to replace
        return
    only = ArtifactFilter(
        key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
    )
    try:
        with get_client(sync_client=True) as client:
            for artifact in client.read_artifacts(artifact_filter=only):
                if artifact.id != newest:
                    with contextlib.suppress(ObjectNotFound):  # deleted meanwhile: as good
                        client.delete_artifact(artifact.id)
    except httpx.HTTPError as exc:  # the new artifact is there: an old one left is untidy only
        log.warning("could not delete the earlier %s artifacts of this run: %s", key, exc)


def report_markdown(built: _report.ReportReport, link: str | None = None) -> str:
    """What changed, in the words of the report page, with the tables it wrote and a link to the
    page (``link``; default: the file)."""
    lines = [f"# What changed on {built.run_date}", "", *(f"- {s}" for s in built.summary)]
    lines += ["", "| table | rows |", "|---|---:|"]
    lines += [f"| `{t}` | {b['rows']:,} |" for t, b in built.tables.items()]
    lines += ["", f"The page: [{built.page}]({link or Path(built.page).as_uri()})"]
    if built.missing:
        lines += ["", "Not in this report:", *(f"- {m}" for m in built.missing)]
    return "\n".join(lines)


#: The task of each step in the graph (flows/graph.py) after the per-source ones.
NIGHT_TASKS: dict[str, Task[..., Any]] = {
    "features": features_step,
    "train": train_step,
    "score": score_step,
    "price-position": price_position_step,
    "train-demand": train_demand_step,
    "forecast": forecast_step,
    "train-sentiment": train_sentiment_step,
    "feedback": feedback_step,
    "product-sentiment": product_sentiment_step,
    "support-queue": support_queue_step,
    "train-recommender": train_recommender_step,
    "recommend": recommend_step,
    "model-health": model_health_step,
    "report": report_step,
}
