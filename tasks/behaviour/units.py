"""Units of the propensity model: features, training and scoring, reading and writing the warehouse.

``user_features_table`` publishes ``features/user/as_of=D``; ``train_propensity`` trains on
time-split snapshots, exports to ONNX, runs the parity gate, registers and maybe promotes;
``score_users`` publishes ``predictions/user_scores/as_of=D`` with the champion.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ModelSettings
from nightowl.tasks.behaviour import train
from nightowl.tasks.behaviour.features import (
    BTYD_FEATURES,
    bucketed_user_features,
    feature_names,
    labelled,
    purchase_labels,
    user_bucket,
    user_features,
    with_btyd,
)
from nightowl.tasks.behaviour.scores import user_scores
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.common.reads import catalogue_before, clean_before, event_days
from nightowl.tasks.models import score, tensorised
from nightowl.tasks.models.export import (
    ParityFailed as ParityFailed,  # where callers have long imported it from
)
from nightowl.tasks.models.lifecycle import (
    RULE_GRAPH,
    Figure,
    NoChampion,
    Trained,
    TrainOutcome,
    Verdict,
    VersionsView,
    admit_trained,
    cadence_due,
    challenge,
    guard_text,
    rule_guard,
    rule_version,
    settle,
)
from nightowl.warehouse.manifest import InputRef, Manifest, combined_hash
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CLEAN_EVENTS,
    CLEAN_FEEDBACK,
    CLEAN_ITEMS,
    CLEAN_MARKET_PRICES,
    USER_FEATURES,
    USER_SCORES,
    Table,
    declare_columns,
)

MODEL = "propensity"
#: How ``nightowl models`` lists its versions.
VERSIONS = VersionsView(
    "propensity models (held-out ROC-AUC of the model, recency-only, RFM and BG/NBD)",
    (
        Figure("held-out", lambda c: c.training["holdout_as_of"]),
        Figure("AUC", lambda c: c.metrics["model"]["roc_auc"]),
        Figure("PR-AUC", lambda c: c.metrics["model"]["pr_auc"]),
        Figure("lift@10%", lambda c: c.metrics["model"]["lift_top_decile"], ".2f"),
        Figure("recency", lambda c: c.metrics["recency_only"]["roc_auc"]),
        Figure("RFM", lambda c: c.metrics["rfm"]["roc_auc"]),
        Figure("BG/NBD", lambda c: c.metrics.get("bgnbd", {}).get("roc_auc")),
        Figure("parity", lambda c: c.parity["max_abs_diff"], ".1g"),
        Figure("rounds", lambda c: c.best_iteration, ""),
    ),
)
log = logging.getLogger("nightowl")


class FeatureReport(BaseModel):
    """What the features step published."""

    table: str = USER_FEATURES.name
    as_of: str
    rows: int
    content_hash: str
    reused: bool = False
    seconds: float = 0.0


class TrainReport(TrainOutcome):
    """What the propensity training did: its held-out snapshot and training snapshots too."""

    holdout: str | None = None
    snapshots: list[str] = Field(default_factory=list)


class ScoreReport(BaseModel):
    """What the score step published, with which model and on which execution providers."""

    table: str = USER_SCORES.name
    as_of: str
    rows: int
    content_hash: str
    model_version: str
    provider: str
    graph: str = Field(default=score.TREE_ENSEMBLE, description="tree_ensemble or tensorised")
    placement: dict[str, int]
    #: Why a simple rule was served in the model's place (None: the model was).
    rule: str | None = None
    seconds: float = 0.0


def feature_sources(wh: Warehouse, as_of: date) -> dict[str, tuple[pl.LazyFrame | None, list]]:
    """Each clean table the user features as of ``as_of`` read: its rows and partition refs."""
    return {
        CLEAN_EVENTS.name: clean_before(wh, CLEAN_EVENTS.name, as_of),
        CLEAN_MARKET_PRICES.name: clean_before(wh, CLEAN_MARKET_PRICES.name, as_of),
        CLEAN_ITEMS.name: catalogue_before(wh, as_of),
        CLEAN_FEEDBACK.name: clean_before(wh, CLEAN_FEEDBACK.name, as_of),
    }


def feature_inputs(wh: Warehouse, as_of: date) -> list[InputRef]:
    """The clean partitions the user features as of ``as_of`` are computed from."""
    return [ref for _, refs in feature_sources(wh, as_of).values() for ref in refs]


# ---- features -------------------------------------------------------------------------------


def user_features_schema() -> pl.Schema:
    """The columns of ``features/user``: what ``user_features`` computes, planned by Polars over
    empty clean tables with every input (the columns are the same without items, prices or
    feedback). No data is read."""

    def clean(table: Table) -> pl.LazyFrame:  # as clean_before scans it: with its dt
        return pl.LazyFrame(schema={**table.schema, "dt": pl.Date()})

    planned = user_features(
        clean(CLEAN_EVENTS),
        date(2000, 1, 1),
        clean(CLEAN_ITEMS),
        clean(CLEAN_MARKET_PRICES),
        clean(CLEAN_FEEDBACK),
    )
    columns = dict(planned.collect_schema())
    as_of = columns.pop("as_of")
    return pl.Schema({**columns, **BTYD_FEATURES, "as_of": as_of})


# The warehouse cannot import this layer: the features table's columns are declared from here.
declare_columns(USER_FEATURES, user_features_schema)


def user_features_table(
    wh: Warehouse,
    as_of: date,
    bucket_events: int = ModelSettings().features_bucket_events,
    fanout: Fanout | None = None,
) -> tuple[pl.DataFrame, FeatureReport]:
    """The user features as of ``as_of``: read back when their inputs are unchanged, else built
    (a user-hash bucket of about ``bucket_events`` events at a time, where ``fanout`` runs it)
    and published to ``features/user/as_of=...``."""
    started = time.perf_counter()
    partition = {"as_of": as_of.isoformat()}
    sources = feature_sources(wh, as_of)
    inputs = [ref for _, refs in sources.values() for ref in refs]
    inputs_hash = combined_hash([wh.code_version, *(r.content_hash for r in inputs)])
    features = USER_FEATURES
    old = wh.manifest(features.layer, features.name, partition)
    if old is not None and old.stats.get("inputs_hash") == inputs_hash:
        published = wh.scan(features.layer, features.name, [partition])
        if published is not None:
            return published.collect(), _feature_report(old, as_of, started, reused=True)
    events, market, items, feedback = (
        sources[t.name][0] for t in (CLEAN_EVENTS, CLEAN_MARKET_PRICES, CLEAN_ITEMS, CLEAN_FEEDBACK)
    )
    if events is None:
        raise NotEnoughHistory(f"no clean events before {as_of}: nothing to featurize")
    buckets = math.ceil(events.select(pl.len()).collect().item() / bucket_events)
    frame = bucketed_user_features(
        events, as_of, items, market, feedback, buckets=buckets, fanout=fanout
    )
    # BG/NBD is fitted on every customer at once, so it joins after the buckets.
    frame = with_btyd(frame)
    manifest = wh.write_partition(
        features.layer,
        features.name,
        partition,
        frame,
        inputs=inputs,
        stats={"inputs_hash": inputs_hash},
    )
    return frame, _feature_report(manifest, as_of, started, reused=False)


def _feature_report(m: Manifest, as_of: date, started: float, *, reused: bool) -> FeatureReport:
    return FeatureReport(
        as_of=as_of.isoformat(),
        rows=m.rows,
        content_hash=m.content_hash,
        reused=reused,
        seconds=round(time.perf_counter() - started, 3),
    )


# ---- training -------------------------------------------------------------------------------


def training_due(wh: Warehouse, last_day: date, cfg: ModelSettings) -> str | None:
    """Why a model should be trained with data up to ``last_day`` (None: the champion is fresh)."""
    registry = Registry(wh)
    as_of = last_day + timedelta(days=1)
    due = cadence_due(
        registry,
        MODEL,
        last_day,
        cfg.horizon_days,
        cfg.retrain_every_days,
        serves=lambda card: outcomes_seen_until(card) <= as_of,  # as scoring_model chooses
    )
    if due is not None:
        return due
    champion = registry.champion(MODEL)
    if champion is None:  # cadence_due has said so already
        return "no champion yet"
    card = registry.card(MODEL, champion.version)
    current = _current_feature_names(wh, last_day)
    if current and set(card.feature_names) - set(current):
        return f"champion {champion.version} needs features this code no longer computes"
    return None


def _current_feature_names(wh: Warehouse, last_day: date) -> list[str]:
    as_of = last_day + timedelta(days=1)
    part = wh.manifest(USER_FEATURES.layer, USER_FEATURES.name, {"as_of": as_of.isoformat()})
    return [c for c in part.columns if c not in {"user_id", "as_of"}] if part else []


@dataclass
class Measured:
    """A propensity model fitted on the training snapshots up to ``last_day``, and every
    scorer's scores on the held-out snapshot beside it."""

    plan: train.SnapshotPlan
    names: list[str]
    booster: lgb.Booster
    fit_rows: pl.DataFrame
    #: The held-out snapshot: features and ``label``.
    holdout: pl.DataFrame
    labels: np.ndarray
    #: Scores on the held-out snapshot: ``model``, each rule and each reference.
    scores: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float | None]]
    refs: list[InputRef]

    def guard(self, margin: float) -> dict[str, Any]:
        """Whether the model beats its best simple rule by ``margin`` (held-out ROC-AUC), and the
        rule's calibration, served in the model's place when it does not."""
        guard = rule_guard(self.metrics, "roc_auc", train.RULES, margin)
        best = guard["rule"]
        return {
            **guard,
            "calibration": asdict(train.calibration(self.scores[best], self.labels)),
        }


def measure_propensity(wh: Warehouse, last_day: date, cfg: ModelSettings) -> Measured:
    """Fit a propensity model on the snapshots whose outcomes end by ``last_day`` and score it,
    the simple rules and the references on the held-out snapshot (as of ``last_day + 1 - H``):
    one origin of a rolling-origin backtest, or the judgement of a training."""
    first_day, events_end = event_days(wh)
    if last_day > events_end:
        raise NotEnoughHistory(
            f"events end on {events_end}, before {last_day}: the newest labels would be cut "
            f"short; train with --date {events_end} (or wait for the missing days)"
        )
    plan = train.snapshot_plan(first_day, last_day, cfg)

    events, _ = clean_before(wh, CLEAN_EVENTS.name, None)  # labels filter their own days from it
    if events is None:  # event_days found partitions, but none holds a file
        raise NotEnoughHistory("the clean events table is empty: run the nightly flow first")
    snapshots, refs = [], []
    for as_of in (*plan.train, plan.holdout):
        frame, report = user_features_table(wh, as_of, cfg.features_bucket_events)
        labels = purchase_labels(events, as_of, cfg.horizon_days)
        snapshots.append(labelled(frame.lazy(), labels).collect())
        refs.append(
            InputRef(
                kind="partition",
                name=f"{USER_FEATURES.path}/as_of={as_of}",
                content_hash=report.content_hash,
            )
        )
    names = feature_names(snapshots[0].drop("label"))
    fit_rows, holdout = pl.concat(snapshots[:-1], how="vertical_relaxed"), snapshots[-1]
    positives = int(holdout["label"].sum())
    if not 0 < positives < holdout.height:
        raise NotEnoughHistory(
            f"the held-out snapshot as of {plan.holdout} has {positives} buyers among "
            f"{holdout.height} users: no ranking can be judged on it"
        )
    booster = train.fit_propensity(fit_rows, names, cfg)
    reference = train.fit_rfm_reference(fit_rows, cfg)
    y_holdout = holdout["label"].to_numpy()
    # predict() is typed for every input and mode (a list of sparse matrices for pred_contrib on
    # sparse input); a dense matrix without pred_contrib always gives an ndarray.
    scores = {
        "model": cast(
            np.ndarray, booster.predict(train.feature_matrix(holdout, names), num_threads=2)
        ),
        **train.baseline_scores(holdout, cfg.horizon_days),
        "lightgbm_rfm": cast(
            np.ndarray,
            reference.predict(train.feature_matrix(holdout, train.RFM_FEATURES), num_threads=2),
        ),
    }
    metrics = {
        name: train.classification_metrics(
            y_holdout, values, probabilities=name in ("model", *train.REFERENCES)
        )
        for name, values in scores.items()
    }
    return Measured(
        plan=plan,
        names=names,
        booster=booster,
        fit_rows=fit_rows,
        holdout=holdout,
        labels=y_holdout,
        scores=scores,
        metrics=metrics,
        refs=refs,
    )


def train_propensity(
    wh: Warehouse, last_day: date, cfg: ModelSettings, *, only_if_due: bool = False
) -> TrainReport:
    """Train on snapshots up to ``last_day``; register the model if it passes the parity gate and
    promote it if it is at least as good as the champion on the held-out snapshot."""
    started = time.perf_counter()
    if only_if_due and (due := training_due(wh, last_day, cfg)) is None:
        champion = Registry(wh).champion(MODEL)
        return TrainReport(
            trained=False,
            reason=f"champion {champion.version} is fresh" if champion else "no champion",
            champion=champion.version if champion else None,
        )
    reason = due if only_if_due else "asked for"
    measured = measure_propensity(wh, last_day, cfg)
    plan, names, booster, metrics = (
        measured.plan,
        measured.names,
        measured.booster,
        measured.metrics,
    )
    fit_rows, holdout, y_holdout = measured.fit_rows, measured.holdout, measured.labels
    x_holdout = train.feature_matrix(holdout, names)
    guard = measured.guard(cfg.rule_margin)
    exports = tensorised.gated_exports(booster, x_holdout, cfg.parity_tolerance)
    registry = Registry(wh)
    admitted = admit_trained(
        registry,
        MODEL,
        last_day,
        Trained(exports.tree_ensemble, booster.model_to_string(), exports.tensorised),
        lambda card: _challenge(registry, card, holdout, y_holdout),
        code_version=wh.code_version,
        features=[{"name": n, "dtype": "float32"} for n in names],
        training={
            "last_day": last_day.isoformat(),
            "train_as_of": [d.isoformat() for d in plan.train],
            "holdout_as_of": plan.holdout.isoformat(),
            "horizon_days": cfg.horizon_days,
            "rows": fit_rows.height,
            "positives": int(fit_rows["label"].sum()),
            "holdout_rows": holdout.height,
        },
        metrics=metrics,
        parity=exports.parity,
        params=train.lightgbm_params(cfg, 2) | {"max_rounds": cfg.max_rounds},
        best_iteration=booster.best_iteration,
        inputs=measured.refs,
        guard=guard,
    )
    return TrainReport(
        trained=True,
        reason=f"{reason}; {admitted.why}",
        version=admitted.card.version,
        promoted=admitted.promoted,
        champion=admitted.champion,
        holdout=plan.holdout.isoformat(),
        snapshots=[d.isoformat() for d in plan.train],
        metrics=metrics,
        guard={k: v for k, v in guard.items() if k != "calibration"},
        parity_max_diff=exports.parity["max_abs_diff"],
        seconds=round(time.perf_counter() - started, 3),
    )


def _challenge(
    registry: Registry, card: ModelCard, holdout: pl.DataFrame, y: np.ndarray
) -> Verdict:
    """Whether the new version beats (or ties) the champion on the same held-out snapshot."""

    def unfair(old: ModelCard) -> Verdict | None:
        if old.training["horizon_days"] != card.training["horizon_days"]:
            return True, f"champion {old.version} predicts another horizon: promoted"
        seen_until = outcomes_seen_until(old)
        if seen_until > date.fromisoformat(card.training["holdout_as_of"]):
            # Its training labels cover part of this held-out window: no fair comparison exists.
            return False, (
                f"champion {old.version} was trained on outcomes up to {seen_until}, inside "
                "this model's held-out window: champion kept"
            )
        if set(old.feature_names) - set(holdout.columns):
            return True, f"champion {old.version} uses features no longer computed: promoted"
        return None

    def duel(old: ModelCard) -> Verdict:
        old_sess = score.session(registry.onnx_bytes(MODEL, old.version), [score.CPU])
        old_x = train.feature_matrix(holdout, old.feature_names)
        old_p = score.predict(old_sess, old_x, len(old_x) or 1)
        old_auc = train.classification_metrics(y, old_p)["roc_auc"]
        new_auc = card.metrics["model"]["roc_auc"]
        if old_auc is None or new_auc is None:  # train_propensity checked both classes are there
            raise ValueError(f"no held-out AUC to compare with champion {old.version}")
        comparison = f"held-out AUC {new_auc:.4f} vs champion {old.version} {old_auc:.4f}"
        return settle(comparison, new_auc >= old_auc)

    return challenge(registry, card, duel, unfair=unfair)


# ---- scoring --------------------------------------------------------------------------------


def score_users(
    wh: Warehouse, as_of: date, cfg: ModelSettings, fanout: Fanout | None = None
) -> ScoreReport:
    """Score every user featurized as of ``as_of`` with the champion (in user buckets where
    ``fanout`` runs them); publish ``user_scores``."""
    started = time.perf_counter()
    registry = Registry(wh)
    card = scoring_model(registry, as_of)
    features, feature_report = user_features_table(wh, as_of, cfg.features_bucket_events)
    missing = set(card.feature_names) - set(features.columns)
    if missing:
        raise NoChampion(
            f"model {card.version} needs features {sorted(missing)} that "
            f"{USER_FEATURES.path} does not have; retrain (nightowl train)"
        )
    served = served_scores(registry, card, features, cfg, fanout)
    scores = user_scores(
        features,
        served.probability,
        horizon_days=card.training["horizon_days"],
        churn_lookback_days=cfg.churn_lookback_days,
        risk_tiers=cfg.risk_tiers,
        model_version=served.version,
        provider=served.provider,
        graph=served.graph,
        as_of=as_of,
    )
    inputs = [
        InputRef(
            kind="partition",
            name=f"{USER_FEATURES.path}/as_of={as_of}",
            content_hash=feature_report.content_hash,
        ),
        InputRef(kind="model", name=f"models/{MODEL}/{card.version}", content_hash=card.version),
    ]
    manifest = wh.write_partition(
        USER_SCORES.layer,
        USER_SCORES.name,
        {"as_of": as_of.isoformat()},
        scores.drop("as_of"),
        inputs=inputs,
        stats={
            "provider": served.provider,
            "graph": served.graph,
            "placement": served.placement,
            "model_version": served.version,
        },
    )
    return ScoreReport(
        as_of=as_of.isoformat(),
        rows=manifest.rows,
        content_hash=manifest.content_hash,
        model_version=served.version,
        provider=served.provider,
        graph=served.graph,
        placement=served.placement,
        rule=guard_text(card) if card.serves_rule else None,
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass(frozen=True)
class Served:
    """Tonight's probabilities and what made them: the model through ONNX Runtime, or the
    simple rule it did not beat (``model_version`` then reads ``rule:<rule>@<version>``)."""

    probability: np.ndarray
    version: str
    provider: str
    graph: str
    placement: dict[str, int]


def served_scores(
    registry: Registry,
    card: ModelCard,
    features: pl.DataFrame,
    cfg: ModelSettings,
    fanout: Fanout | None = None,
) -> Served:
    """The purchase probabilities of ``features``' users from the version ``card`` names, or
    from its calibrated simple rule where the model did not beat it; the model's rows go out in
    user-hash buckets of ``score_bucket_users`` where ``fanout`` (when not serial) runs them."""
    rule = card.serves_rule
    if rule is not None and card.guard is not None:
        raw = train.rule_scores(features, rule, card.training["horizon_days"])
        probability = train.Calibration(**card.guard["calibration"]).apply(raw)
        return Served(probability.astype(np.float32), rule_version(card), "polars", RULE_GRAPH, {})
    scorer = score.scorer_for(registry, card, cfg)
    matrix = train.feature_matrix(features, card.feature_names)
    if fanout is None or fanout.resolved() == "serial":
        probability = scorer.predict(matrix)
    else:
        named = score.RegisteredScorer(str(registry.wh.data_root), MODEL, card.version, cfg)
        buckets = max(1, math.ceil(features.height / cfg.score_bucket_users))
        bucket = features.select(user_bucket(pl.col("user_id"), buckets))
        probability = score.bucketed_predict(named, matrix, bucket.to_series().to_numpy(), fanout)
    return Served(probability, card.version, scorer.provider, scorer.graph, scorer.placement)


def outcomes_seen_until(card: ModelCard) -> date:
    """The day after the last outcome (label day) a model was trained on."""
    newest = max(date.fromisoformat(d) for d in card.training["train_as_of"])
    return newest + timedelta(days=card.training["horizon_days"])


def scoring_model(registry: Registry, as_of: date) -> ModelCard:
    """The champion, or for a past ``as_of`` the newest version trained only on earlier outcomes,
    so rerunning an old date never scores it with knowledge of what came after."""
    champion = registry.champion(MODEL)
    if champion is None:
        raise NoChampion(
            "no propensity champion in the registry: train one first (nightowl train), or let "
            "the nightly flow train when enough history has arrived"
        )
    card = registry.card(MODEL, champion.version)
    if outcomes_seen_until(card) <= as_of:
        return card
    earlier = [c for c in registry.versions(MODEL) if outcomes_seen_until(c) <= as_of]
    if not earlier:
        raise NoChampion(
            f"every registered model was trained on outcomes after {as_of}; scores as of that "
            "date would know the future. Train one with an earlier --date to score it"
        )
    chosen = max(earlier, key=lambda c: (outcomes_seen_until(c), c.created_at))
    log.info("scoring %s with %s: the champion saw outcomes after it", as_of, chosen.version)
    return chosen


def booster_of(wh: Warehouse, version: str) -> lgb.Booster:
    """The native LightGBM model of a registered version."""
    path = Registry(wh).version_dir(MODEL, version) / "model.lgb.txt"
    return lgb.Booster(model_file=str(path))
