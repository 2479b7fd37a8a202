"""Units of the propensity model: features, training and scoring, reading and writing the warehouse.

``user_features_table`` publishes ``features/user/as_of=D``; ``train_propensity`` trains on
time-split snapshots, exports to ONNX, runs the parity gate, registers and maybe promotes;
``score_users`` publishes ``predictions/user_scores/as_of=D`` with the champion.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import date, timedelta

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ModelSettings
from nightowl.tasks.behaviour import train
from nightowl.tasks.behaviour.features import (
    bucketed_user_features,
    feature_names,
    labelled,
    purchase_labels,
)
from nightowl.tasks.common.reads import catalogue_before, clean_before, event_days
from nightowl.tasks.models import score, tensorised
from nightowl.tasks.models.export import (
    ParityFailed as ParityFailed,  # where callers have long imported it from
)
from nightowl.tasks.models.lifecycle import NoChampion, TrainOutcome, cadence_due
from nightowl.warehouse.manifest import InputRef, Manifest, combined_hash
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse

MODEL = "propensity"
log = logging.getLogger("nightowl")


class FeatureReport(BaseModel):
    """What the features step published."""

    table: str = "user"
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

    table: str = "user_scores"
    as_of: str
    rows: int
    content_hash: str
    model_version: str
    provider: str
    graph: str = Field(default=score.TREE_ENSEMBLE, description="tree_ensemble or tensorised")
    placement: dict[str, int]
    seconds: float = 0.0


def _feature_sources(wh: Warehouse, as_of: date) -> dict[str, tuple[pl.LazyFrame | None, list]]:
    """Each clean table the user features as of ``as_of`` read: its rows and partition refs."""
    return {
        "events": clean_before(wh, "events", as_of),
        "market_prices": clean_before(wh, "market_prices", as_of),
        "items": catalogue_before(wh, as_of),
        "feedback": clean_before(wh, "feedback", as_of),
    }


def feature_inputs(wh: Warehouse, as_of: date) -> list[InputRef]:
    """The clean partitions the user features as of ``as_of`` are computed from."""
    return [ref for _, refs in _feature_sources(wh, as_of).values() for ref in refs]


# ---- features -------------------------------------------------------------------------------


def user_features_table(
    wh: Warehouse, as_of: date, bucket_events: int = ModelSettings().features_bucket_events
) -> tuple[pl.DataFrame, FeatureReport]:
    """The user features as of ``as_of``: read back when their inputs are unchanged, else built
    (a user-hash bucket of about ``bucket_events`` events at a time) and published to
    ``features/user/as_of=...``."""
    started = time.perf_counter()
    partition = {"as_of": as_of.isoformat()}
    sources = _feature_sources(wh, as_of)
    inputs = [ref for _, refs in sources.values() for ref in refs]
    inputs_hash = combined_hash([wh.code_version, *(r.content_hash for r in inputs)])
    old = wh.manifest("features", "user", partition)
    published = wh.scan("features", "user", [partition]) if old is not None else None
    if published is not None and old.stats.get("inputs_hash") == inputs_hash:
        return published.collect(), _feature_report(old, as_of, started, reused=True)
    events, market, items, feedback = (
        sources[t][0] for t in ("events", "market_prices", "items", "feedback")
    )
    if events is None:
        raise NotEnoughHistory(f"no clean events before {as_of}: nothing to featurize")
    buckets = math.ceil(events.select(pl.len()).collect().item() / bucket_events)
    frame = bucketed_user_features(events, as_of, items, market, feedback, buckets=buckets)
    manifest = wh.write_partition(
        "features", "user", partition, frame, inputs=inputs, stats={"inputs_hash": inputs_hash}
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
        registry, MODEL, last_day, cfg.horizon_days, cfg.retrain_every_days,
        serves=lambda card: outcomes_seen_until(card) <= as_of,  # as scoring_model chooses
    )  # fmt: skip
    if due is not None:
        return due
    champion = registry.champion(MODEL)
    card = registry.card(MODEL, champion.version)
    current = _current_feature_names(wh, last_day)
    if current and set(card.feature_names) - set(current):
        return f"champion {champion.version} needs features this code no longer computes"
    return None


def _current_feature_names(wh: Warehouse, last_day: date) -> list[str]:
    as_of = last_day + timedelta(days=1)
    part = wh.manifest("features", "user", {"as_of": as_of.isoformat()})
    return [c for c in part.columns if c not in {"user_id", "as_of"}] if part else []


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
    first_day, events_end = event_days(wh)
    if last_day > events_end:
        raise NotEnoughHistory(
            f"events end on {events_end}, before {last_day}: the newest labels would be cut "
            f"short; train with --date {events_end} (or wait for the missing days)"
        )
    plan = train.snapshot_plan(first_day, last_day, cfg)

    events, _ = clean_before(wh, "events", None)  # labels filter their own days from it
    snapshots, refs = [], []
    for as_of in (*plan.train, plan.holdout):
        frame, report = user_features_table(wh, as_of, cfg.features_bucket_events)
        labels = purchase_labels(events, as_of, cfg.horizon_days)
        snapshots.append(labelled(frame.lazy(), labels).collect())
        refs.append(
            InputRef(
                kind="partition",
                name=f"features/user/as_of={as_of}",
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
    x_holdout = train.feature_matrix(holdout, names)
    y_holdout = holdout["label"].to_numpy()
    native = booster.predict(x_holdout, num_threads=2)
    metrics = {"model": train.classification_metrics(y_holdout, native)}
    for name, baseline in train.baseline_scores(holdout).items():
        metrics[name] = train.classification_metrics(y_holdout, baseline, probabilities=False)

    exports = tensorised.gated_exports(booster, x_holdout, cfg.parity_tolerance)
    onnx_bytes, parity = exports.tree_ensemble, exports.parity
    max_diff = parity["max_abs_diff"]
    registry = Registry(wh)
    version = registry.version_name(last_day.isoformat(), onnx_bytes)
    card = ModelCard(
        model=MODEL,
        version=version,
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
        parity=parity,
        params=train.lightgbm_params(cfg, 2) | {"max_rounds": cfg.max_rounds},
        best_iteration=booster.best_iteration,
        inputs=refs,
    )
    promoted, why = _challenge(registry, card, holdout, x_holdout, y_holdout)
    champion = registry.admit(
        card, onnx_bytes, booster.model_to_string(), promote=promoted, reason=why,
        tensor_bytes=exports.tensorised,
    )  # fmt: skip
    return TrainReport(
        trained=True,
        reason=f"{reason}; {why}",
        version=version,
        promoted=promoted,
        champion=champion,
        holdout=plan.holdout.isoformat(),
        snapshots=[d.isoformat() for d in plan.train],
        metrics=metrics,
        parity_max_diff=max_diff,
        seconds=round(time.perf_counter() - started, 3),
    )


def _challenge(
    registry: Registry, card: ModelCard, holdout: pl.DataFrame, x: np.ndarray, y: np.ndarray
) -> tuple[bool, str]:
    """Whether the new version beats (or ties) the champion on the same held-out snapshot."""
    champion = registry.champion(MODEL)
    if champion is None:
        return True, "first model: promoted"
    if champion.version == card.version:
        return True, "same model as the champion"
    old = registry.card(MODEL, champion.version)
    if old.training["horizon_days"] != card.training["horizon_days"]:
        return True, f"champion {champion.version} predicts another horizon: promoted"
    seen_until = outcomes_seen_until(old)
    if seen_until > date.fromisoformat(card.training["holdout_as_of"]):
        # Its training labels cover part of this held-out window: no fair comparison exists.
        return False, (
            f"champion {champion.version} was trained on outcomes up to {seen_until}, inside "
            "this model's held-out window: champion kept"
        )
    if set(old.feature_names) - set(holdout.columns):
        return True, f"champion {champion.version} uses features no longer computed: promoted"
    old_sess = score.session(registry.onnx_bytes(MODEL, champion.version), [score.CPU])
    old_x = train.feature_matrix(holdout, old.feature_names)
    old_auc = train.classification_metrics(y, score.predict(old_sess, old_x, len(old_x) or 1))[
        "roc_auc"
    ]
    new_auc = card.metrics["model"]["roc_auc"]
    verdict = f"held-out AUC {new_auc:.4f} vs champion {champion.version} {old_auc:.4f}"
    if new_auc >= old_auc:
        return True, f"{verdict}: promoted"
    return False, f"{verdict}: champion kept"


# ---- scoring --------------------------------------------------------------------------------


def score_users(wh: Warehouse, as_of: date, cfg: ModelSettings) -> ScoreReport:
    """Score every user featurized as of ``as_of`` with the champion; publish ``user_scores``."""
    started = time.perf_counter()
    registry = Registry(wh)
    card = scoring_model(registry, as_of)
    features, feature_report = user_features_table(wh, as_of, cfg.features_bucket_events)
    missing = set(card.feature_names) - set(features.columns)
    if missing:
        raise NoChampion(
            f"model {card.version} needs features {sorted(missing)} that "
            "features/user does not have; retrain (nightowl train)"
        )
    scorer = score.scorer_for(registry, card, cfg)
    probability = scorer.predict(train.feature_matrix(features, card.feature_names))
    scores = score.user_scores(
        features,
        probability,
        horizon_days=card.training["horizon_days"],
        churn_lookback_days=cfg.churn_lookback_days,
        risk_tiers=cfg.risk_tiers,
        model_version=card.version,
        provider=scorer.provider,
        graph=scorer.graph,
        as_of=as_of,
    )
    inputs = [
        InputRef(
            kind="partition",
            name=f"features/user/as_of={as_of}",
            content_hash=feature_report.content_hash,
        ),
        InputRef(kind="model", name=f"models/{MODEL}/{card.version}", content_hash=card.version),
    ]
    manifest = wh.write_partition(
        "predictions",
        "user_scores",
        {"as_of": as_of.isoformat()},
        scores.drop("as_of"),
        inputs=inputs,
        stats={
            "provider": scorer.provider,
            "graph": scorer.graph,
            "placement": scorer.placement,
            "model_version": card.version,
        },
    )
    return ScoreReport(
        as_of=as_of.isoformat(),
        rows=manifest.rows,
        content_hash=manifest.content_hash,
        model_version=card.version,
        provider=scorer.provider,
        graph=scorer.graph,
        placement=scorer.placement,
        seconds=round(time.perf_counter() - started, 3),
    )


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
