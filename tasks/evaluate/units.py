"""``nightowl evaluate``: every model beside its simple rules, at past origins of the user's own
warehouse, written to ``reports/model_evaluation/as_of=D``.

An origin is a date the model is trained *before* (on the data it would have had then, with
its own training protocol) and judged *after* (on the outcomes that followed). Origins step back
from the newest one whose outcomes are complete, ``origin_step_days`` apart. Nothing is
registered: a backtest fits its models and lets them go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import (
    EvaluateSettings,
    FeedbackSettings,
    MarketSettings,
    ModelSettings,
    RecommendSettings,
)
from nightowl.tasks.behaviour import train
from nightowl.tasks.behaviour.units import measure_propensity
from nightowl.tasks.evaluate.rows import MODEL, REFERENCE, RULE, Judged, figure_rows, verdicts
from nightowl.tasks.feedback.units import measure_sentiment
from nightowl.tasks.market.units import measure_demand
from nightowl.tasks.recommend import lists as rec
from nightowl.tasks.recommend.units import measure_recommender
from nightowl.warehouse.manifest import Manifest
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import MODEL_EVALUATION

log = logging.getLogger("nightowl")

#: What ``nightowl evaluate`` can evaluate, in the order it reports them.
MODELS = ("propensity", "recommender", "demand", "sentiment")


class EvaluationReport(BaseModel):
    """What an evaluation wrote, and each model's verdict at each origin."""

    table: str = MODEL_EVALUATION.name
    as_of: str
    rows: int
    content_hash: str | None = None
    #: Per model: why it could not be evaluated (too little history, no ratings...).
    skipped: dict[str, str] = Field(default_factory=dict)
    verdicts: list[dict] = Field(default_factory=list)
    seconds: float = 0.0


def propensity_rows(
    wh: Warehouse, last_day: date, cfg: ModelSettings, origins: int, step_days: int
) -> pl.DataFrame:
    """Propensity (all users) and churn (customers who bought within the churn look-back) at
    ``origins`` held-out dates, the model beside recency, RFM, BG/NBD and LightGBM on RFM."""
    kinds = {"model": MODEL, **dict.fromkeys(train.RULES, RULE)}
    kinds |= dict.fromkeys(train.REFERENCES, REFERENCE)
    metrics = ("roc_auc", "pr_auc", "brier", "lift_top_decile")
    parts = []
    for k in range(origins):
        measured = measure_propensity(wh, last_day - timedelta(days=k * step_days), cfg)
        origin, labels, horizon = measured.plan.holdout, measured.labels, cfg.horizon_days
        judged = Judged("propensity", origin, horizon, "all_users", len(labels), "roc_auc")
        parts.append(figure_rows(judged, measured.metrics, kinds, metrics))
        # Churn risk is 1 - p for the customers who bought within the look-back: judged there.
        recent = (pl.col("purchase_recency_days") < cfg.churn_lookback_days).fill_null(False)
        active = measured.holdout.select(recent).to_series().to_numpy()
        churned = 1 - labels[active]
        churn = {
            name: train.classification_metrics(
                churned, 1.0 - scores[active], probabilities=kinds[name] != RULE
            )
            for name, scores in measured.scores.items()
        }
        judged = Judged("churn", origin, horizon, "active_customers", int(active.sum()), "roc_auc")
        parts.append(figure_rows(judged, churn, kinds, metrics))
    return pl.concat(parts)


def recommender_rows(
    wh: Warehouse, last_day: date, cfg: RecommendSettings, origins: int, step_days: int
) -> pl.DataFrame:
    """Recall, NDCG and MAP at K of the ranker beside popularity, repeat-buy and co-occurrence,
    over every buyer of each window who had bought before it, repurchases counted (``all``) and
    new items only (``new``)."""
    kinds = {"model": MODEL, **dict.fromkeys(rec.BASELINES, RULE)}
    names = ("recall", "ndcg", "map", "coverage", "full_lists")
    parts = []
    for k in range(origins):
        measured = measure_recommender(wh, last_day - timedelta(days=k * step_days), cfg)
        for protocol in rec.PROTOCOLS:
            figures = {
                scorer: {m: values[f"{protocol}_{m}"] for m in names}
                for scorer, values in measured.metrics.items()
            }
            users = int(measured.metrics["model"][f"{protocol}_users"] or 0)
            judged = Judged(
                "recommender", measured.plan.holdout, cfg.horizon_days, protocol, users, "recall"
            )
            parts.append(figure_rows(judged, figures, kinds, names))
    return pl.concat(parts)


def demand_rows(
    wh: Warehouse, last_day: date, cfg: MarketSettings, origins: int, step_days: int
) -> pl.DataFrame:
    """WAPE, MASE and bias of the demand model beside seasonal naive and the 28-day average at
    ``origins`` weekly origins (item and category level), and the model's interval coverage."""
    del step_days  # the demand backtest's origins are a week apart: its horizon is days
    kinds = {"model": MODEL, "seasonal_naive": RULE, "moving_average_28d": RULE}
    names = ("wape", "mase", "bias", "coverage")
    parts = []
    for fold in measure_demand(wh, last_day, cfg, origins):
        for level, figures in fold.figures.items():
            judged = Judged(
                "demand", fold.origin, cfg.horizon_days, level, fold.units[level], "wape"
            )
            parts.append(figure_rows(judged, figures, kinds, names))
    return pl.concat(parts)


def sentiment_rows(
    wh: Warehouse, last_day: date, cfg: FeedbackSettings, origins: int, step_days: int
) -> pl.DataFrame:
    """Macro-F1 and accuracy of the labels and ROC-AUC (positive vs negative) of the model
    beside the VADER lexicon and a plain TF-IDF + logistic regression, on successive slices of
    the newest rated texts, each model fitted on the texts before its slice."""
    del step_days  # ratings arrive unevenly: the slices are shares of the texts, not days
    kinds = {"model": MODEL, "lexicon": RULE, "tfidf_lr": REFERENCE}
    names = ("macro_f1", "polar_macro_f1", "accuracy", "roc_auc")
    parts = []
    for k in range(origins, 0, -1):
        measured = measure_sentiment(wh, last_day, cfg, slices=origins, slice_no=k)
        judged = Judged(
            "sentiment", measured.origin, 0, "rated_texts", measured.holdout_rows, "macro_f1"
        )
        parts.append(figure_rows(judged, measured.metrics, kinds, names))
    return pl.concat(parts)


Backtest = Callable[[Warehouse, date, Any, int, int], pl.DataFrame]
#: Each model's backtest, and the settings section it reads.
BACKTESTS: dict[str, tuple[Backtest, str]] = {
    "propensity": (propensity_rows, "model"),
    "recommender": (recommender_rows, "recommend"),
    "demand": (demand_rows, "market"),
    "sentiment": (sentiment_rows, "feedback"),
}


def evaluation_rows(
    wh: Warehouse, name: str, last_day: date, cfg: Any, origins: int, step_days: int
) -> pl.DataFrame:
    """Model ``name``'s backtest figures at ``origins`` origins on data up to ``last_day``
    (``cfg``: its settings section); ``NotEnoughHistory`` when the warehouse is too young."""
    backtest, _ = BACKTESTS[name]
    log.info("evaluating %s at %d origins", name, origins)
    return backtest(wh, last_day, cfg, origins, step_days)


def publish_evaluation(
    wh: Warehouse,
    last_day: date,
    parts: list[pl.DataFrame],
    skipped: dict[str, str],
    origins: int,
    started: float,
    margin: float = 0.0,
) -> EvaluationReport:
    """Write the backtests' figures to ``model_evaluation`` as of the day after ``last_day``
    (nothing when every model was skipped) and report the verdicts."""
    as_of = last_day + timedelta(days=1)
    frame = pl.concat(parts) if parts else pl.DataFrame(schema=MODEL_EVALUATION.schema)
    frame = frame.sort("model", "protocol", "origin", "scorer", "metric")
    manifest = None
    if frame.height:
        manifest = wh.write_partition(
            MODEL_EVALUATION.layer,
            MODEL_EVALUATION.name,
            MODEL_EVALUATION.partition(as_of.isoformat()),
            frame,
            stats={"origins": origins, "skipped": skipped, "margin": margin},
        )
    judged = verdicts(frame, margin)
    return EvaluationReport(
        as_of=as_of.isoformat(),
        rows=frame.height,
        content_hash=manifest.content_hash if manifest else None,
        skipped=skipped,
        verdicts=judged.with_columns(pl.col("origin").cast(pl.String)).to_dicts(),
        seconds=round(time.perf_counter() - started, 3),
    )


def model_evaluation(
    wh: Warehouse,
    last_day: date,
    sections: dict[str, Any],
    evaluate: EvaluateSettings,
    models: tuple[str, ...] = MODELS,
    origins: int | None = None,
) -> EvaluationReport:
    """Backtest ``models`` one after the other at ``origins`` (default ``evaluate.origins``)
    past origins on data up to ``last_day`` and publish their figures; ``sections`` maps each
    settings section (model, recommend, market, feedback) to its settings."""
    started = time.perf_counter()
    n = origins or evaluate.origins
    parts, skipped = [], {}
    for name in models:
        cfg = sections[BACKTESTS[name][1]]
        try:
            parts.append(evaluation_rows(wh, name, last_day, cfg, n, evaluate.origin_step_days))
        except NotEnoughHistory as exc:
            skipped[name] = str(exc)
            log.warning("%s not evaluated: %s", name, exc)
    return publish_evaluation(wh, last_day, parts, skipped, n, started, evaluate.margin)


def evaluation_partition(wh: Warehouse, as_of: date | None = None) -> Manifest | None:
    """The newest ``model_evaluation`` partition as of ``as_of`` or earlier (None: none yet)."""
    key = MODEL_EVALUATION.partition_key
    known = [
        m
        for m in wh.manifests(MODEL_EVALUATION.layer, MODEL_EVALUATION.name)
        if as_of is None or m.partition[key] <= as_of.isoformat()
    ]
    return max(known, key=lambda m: m.partition[key], default=None)


def latest_evaluation(wh: Warehouse, as_of: date | None = None) -> pl.DataFrame | None:
    """The figures of :func:`evaluation_partition`, or None."""
    newest = evaluation_partition(wh, as_of)
    if newest is None:
        return None
    scan = wh.scan(MODEL_EVALUATION.layer, MODEL_EVALUATION.name, [newest.partition])
    return None if scan is None else scan.collect()
