"""Units of the recommender: training the LightGBM ranker and writing ``recommendations``.

``train_recommender`` builds candidate snapshots a horizon apart, learns a lambdarank model on the
purchases that followed each, judges it on the latest fully observed window beside three
baselines (global popularity, co-occurrence alone, repeat-buy) under two protocols, exports it to
ONNX through the parity gate and registers it. ``recommendations_table`` scores every active
user's candidates with the version allowed to see that date, bucket by bucket (a stable hash of
the user id) so memory stays bounded, and publishes ``predictions/recommendations/as_of=D``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import cast

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import Field

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ModelSettings, RecommendSettings
from nightowl.tasks.behaviour import train
from nightowl.tasks.behaviour.features import user_bucket
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.common.reads import catalogue_before, clean_before, event_days
from nightowl.tasks.common.reports import TableReport, table_report
from nightowl.tasks.models import score, tensorised
from nightowl.tasks.models.lifecycle import (
    Figure,
    Trained,
    TrainOutcome,
    Verdict,
    VersionsView,
    admit_trained,
    cadence_due,
    challenge,
    rule_guard,
    rule_version,
    settle,
)
from nightowl.tasks.recommend import lists as rec
from nightowl.warehouse.manifest import InputRef
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CLEAN_EVENTS,
    CLEAN_ITEMS,
    CLEAN_MARKET_PRICES,
    RECOMMENDATIONS,
)

MODEL = "recommender"
BASELINES = ("popularity", "cooccurrence", "repeat_buy")


def _best_baseline(card: ModelCard, key: str) -> float:
    return max(card.metrics[b][key] or 0.0 for b in BASELINES)


#: How ``nightowl models`` lists its versions.
VERSIONS = VersionsView(
    "recommender models (held-out NDCG@K of the ranker and the best baseline, with repurchases "
    "and new items only)",
    (
        Figure("held-out", lambda c: c.training["holdout_as_of"]),
        Figure("users", lambda c: c.training["holdout_users"], ""),
        Figure("NDCG all", lambda c: c.metrics["model"]["all_ndcg"]),
        Figure("baseline", lambda c: _best_baseline(c, "all_ndcg")),
        Figure("NDCG new", lambda c: c.metrics["model"]["new_ndcg"]),
        Figure("baseline", lambda c: _best_baseline(c, "new_ndcg")),
        Figure("parity", lambda c: c.parity["max_rel_diff"], ".1g"),
        Figure("rounds", lambda c: c.best_iteration, ""),
    ),
)
TABLE = RECOMMENDATIONS.name
#: The model_version of lists ranked before any ranker is registered.
HEURISTIC = "heuristic-rrf"
log = logging.getLogger("nightowl")


class RecommenderTrainReport(TrainOutcome):
    """What a recommender training did: its held-out window and training snapshots."""

    holdout: str | None = None
    snapshots: list[str] = Field(default_factory=list)
    top_k: int = 10


# ---- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """The clean tables a recommendation as of ``as_of`` reads, and their partition refs."""

    events: pl.LazyFrame
    items: pl.LazyFrame | None
    market_prices: pl.LazyFrame | None
    refs: list[InputRef]


def inputs_before(wh: Warehouse, as_of: date, cfg: RecommendSettings) -> Inputs:
    """Clean events and market prices of the ``history_days`` before ``as_of``, and the items
    snapshot known then."""
    since = as_of - timedelta(days=cfg.history_days + 1)
    frames, refs = {}, []
    for table in (CLEAN_EVENTS, CLEAN_MARKET_PRICES):
        manifests = [
            m
            for m in wh.manifests(table.layer, table.name)
            if since.isoformat() <= m.partition["dt"] < as_of.isoformat()
        ]
        frames[table.name] = wh.scan(table.layer, table.name, [m.partition for m in manifests])
        refs += [m.ref for m in manifests] if frames[table.name] is not None else []
    items, item_refs = catalogue_before(wh, as_of)
    if items is not None and not any(
        m.partition["dt"] < as_of.isoformat()
        for m in wh.manifests(CLEAN_ITEMS.layer, CLEAN_ITEMS.name)
    ):
        # Only a later snapshot exists (a first run that brought history): its titles and
        # categories hold for earlier days, its prices and active flags are not known yet then.
        items = items.with_columns(price=pl.lit(None, pl.Float64), active=pl.lit(None, pl.Boolean))
    events, market_prices = frames[CLEAN_EVENTS.name], frames[CLEAN_MARKET_PRICES.name]
    if events is None:
        raise NotEnoughHistory(f"no clean events before {as_of}: nothing to recommend from")
    return Inputs(events, items, market_prices, refs + item_refs)


def input_refs(wh: Warehouse, as_of: date, cfg: RecommendSettings) -> list[InputRef]:
    """What recommendations as of ``as_of`` are computed from (empty before any events)."""
    try:
        return inputs_before(wh, as_of, cfg).refs
    except NotEnoughHistory:
        return []


@dataclass(frozen=True)
class Snapshot:
    """Candidates with features for a set of users as of one date, and what they then bought."""

    as_of: date
    frame: pl.DataFrame  # ranker features (+ label when truth is known)
    users: rec.UserTables
    items: rec.ItemTables
    truth: pl.DataFrame | None


def snapshot(
    inputs: Inputs,
    as_of: date,
    cfg: RecommendSettings,
    *,
    events: pl.LazyFrame | None = None,
    users: pl.DataFrame | None = None,
) -> Snapshot:
    """Candidates and features as of ``as_of`` for ``users`` (default: the active ones); when
    ``events`` (all of them, later ones too) are given, ``label`` marks what was bought in the
    ``horizon_days`` that followed."""
    theirs = None if users is None else pl.col("user_id").is_in(users["user_id"].implode())
    history = rec.history_as_of(
        inputs.events, inputs.items, inputs.market_prices, as_of, cfg, browsing_of=theirs
    )
    if users is None:
        users = rec.active_users(inputs.events, as_of, cfg.active_days)
    codes = rec.key_codes(history, users)
    coded = rec.coded_history(history, codes)
    items = rec.item_tables(coded, cfg)
    ut = rec.user_tables(coded, codes.coded(users))
    frame = codes.decoded(rec.ranker_features(rec.candidates(ut, items, cfg), ut, items, coded))
    ut, items = rec.decoded_tables(ut, codes), rec.decoded_tables(items, codes)
    truth = None
    if events is not None:
        truth = rec.purchased_in_window(events, as_of, cfg.horizon_days)
        frame = frame.join(
            truth.with_columns(label=pl.lit(1, pl.Int32)), on=["user_id", "item_id"], how="left"
        ).with_columns(pl.col("label").fill_null(0))
    return Snapshot(as_of, frame, ut, items, truth)


# ---- training -------------------------------------------------------------------------------


def ranker_params(cfg: RecommendSettings, threads: int) -> dict:
    """LightGBM lambdarank parameters: NDCG at top_k, deterministic for a seed and thread count."""
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [cfg.top_k],
        "lambdarank_truncation_level": 2 * cfg.top_k,
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": 0.8,
        "lambda_l2": 1.0,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbose": -1,
    }


def sampled_users(users: pl.DataFrame, limit: int) -> pl.DataFrame:
    """At most ``limit`` of ``users``, the same ones for the same ids (a stable hash order)."""
    if users.height <= limit:
        return users
    return users.sort(pl.col("user_id").hash(seed=1)).head(limit).sort("user_id")


def learning_rows(snapshots: Iterable[Snapshot], cfg: RecommendSettings) -> pl.DataFrame:
    """Training candidates: users with at least one bought candidate (the others teach a ranker
    nothing), at most ``max_training_users`` per snapshot, grouped by (as_of, user): ``group``,
    ``item_id``, the features and ``label``.

    Only what the ranker reads is kept, and each snapshot is let go once its rows are taken
    (``snapshots`` may be a generator): the candidates' titles and reasons would be most of the
    memory."""
    parts = []
    for snap in snapshots:
        useful = snap.frame.filter(pl.col("label").max().over("user_id") > 0)
        keep = sampled_users(useful.select("user_id").unique(), cfg.max_training_users)
        group = pl.lit(snap.as_of.isoformat()) + "|" + pl.col("user_id")
        parts.append(
            useful.join(keep, on="user_id", how="semi").select(
                group.alias("group"), "item_id", *rec.FEATURES, "label"
            )
        )
        del snap, useful
    return pl.concat(parts).sort("group", "item_id")


def fit_ranker(
    rows: pl.DataFrame, cfg: RecommendSettings, threads: int = 2, rounds: int | None = None
) -> lgb.Booster:
    """A lambdarank booster on ``rows`` (features, ``label``, ``group``), early-stopped on a
    stable share of the groups; or, given ``rounds``, exactly that many trees on all of them
    (a model of a known size, for benchmarks)."""
    names = list(rec.FEATURES)
    held = train.validation_users(rows["group"], cfg.validation_share)
    if held.all() or not held.any():
        held = np.zeros(len(rows), dtype=bool)
    fit, watch = rows.filter(~held), rows.filter(held)

    def dataset(frame: pl.DataFrame, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        sizes = frame.group_by("group", maintain_order=True).len()["len"].to_numpy()
        return lgb.Dataset(
            train.feature_matrix(frame, names),
            frame["label"].to_numpy(),
            group=sizes,
            feature_name=names,
            reference=reference,
            free_raw_data=True,
        )

    params = ranker_params(cfg, threads)
    if rounds is not None:
        return lgb.train(params, dataset(rows), num_boost_round=rounds)
    fit_set = dataset(fit)
    if watch.height == 0:
        return lgb.train(params, fit_set, num_boost_round=min(cfg.max_rounds, 100))
    return lgb.train(
        params,
        fit_set,
        num_boost_round=cfg.max_rounds,
        valid_sets=[dataset(watch, fit_set)],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )


def computes_features_of(card: ModelCard) -> bool:
    """Whether this code computes exactly the features, in order, that ``card``'s ranker reads."""
    return card.feature_names == list(rec.FEATURES)


def training_due(wh: Warehouse, last_day: date, cfg: RecommendSettings) -> str | None:
    """Why the ranker should be trained with data up to ``last_day`` (None: it is fresh)."""
    registry = Registry(wh)
    due = cadence_due(registry, MODEL, last_day, cfg.horizon_days, cfg.retrain_every_days)
    if due is not None:
        return due
    champion = registry.champion(MODEL)
    if champion is None:  # cadence_due has said so already
        return "no champion yet"
    card = registry.card(MODEL, champion.version)
    if not computes_features_of(card):
        return f"champion {card.version} was trained on other features than this code computes"
    return None


@dataclass(frozen=True)
class MeasuredRanker:
    """A ranker fitted on the snapshots whose windows end by ``last_day``, and its held-out
    metrics beside the baselines on the last window."""

    plan: train.SnapshotPlan
    booster: lgb.Booster
    learned: dict[str, int]
    held: Snapshot
    holdout_inputs: Inputs
    metrics: dict[str, dict[str, float | None]]


def measure_recommender(wh: Warehouse, last_day: date, cfg: RecommendSettings) -> MeasuredRanker:
    """Fit a ranker on candidate snapshots whose purchase windows end before the held-out one
    (as of ``last_day + 1 - H``), and judge it and the baselines there: over every user who
    bought in that window and had bought before it (at most ``max_holdout_users``, a stable
    sample), whether or not they were active lately."""
    first_day, events_end = event_days(wh)
    if last_day > events_end:
        raise NotEnoughHistory(
            f"events end on {events_end}, before {last_day}: the held-out purchases would be "
            f"cut short; train with --date {events_end}"
        )
    plan = train.snapshot_plan(first_day, last_day, cfg)
    everything, _ = clean_before(wh, CLEAN_EVENTS.name, last_day + timedelta(days=1))
    if everything is None:  # event_days found partitions, but none holds a file
        raise NotEnoughHistory("the clean events table is empty: run the nightly flow first")

    def snapshots() -> Iterator[Snapshot]:
        for as_of in plan.train:
            inputs = inputs_before(wh, as_of, cfg)
            bought = rec.purchased_in_window(everything, as_of, cfg.horizon_days)
            users = rec.active_users(inputs.events, as_of, cfg.active_days).join(
                bought.select("user_id").unique(), on="user_id", how="semi"
            )
            # Candidates for every buyer would grow with the shop; a ranker needs a sample.
            users = sampled_users(users, cfg.max_training_users)
            yield snapshot(inputs, as_of, cfg, events=everything, users=users)

    rows = learning_rows(snapshots(), cfg)
    if rows.height == 0:
        raise NotEnoughHistory(
            f"no candidate in the snapshots {[d.isoformat() for d in plan.train]} was bought in "
            "the window after it: nothing for a ranker to learn"
        )
    booster = fit_ranker(rows, cfg)
    learned = {"rows": rows.height, "groups": rows["group"].n_unique()}
    learned["positives"] = int(rows["label"].sum())
    del rows  # before the held-out candidates are built
    holdout_inputs = inputs_before(wh, plan.holdout, cfg)
    # Metrics are over the window's buyers who had bought before: only theirs need candidates.
    buyers = rec.purchased_in_window(everything, plan.holdout, cfg.horizon_days)
    held_users = sampled_users(
        rec.previous_buyers(holdout_inputs.events, plan.holdout).join(
            buyers.select("user_id").unique(), on="user_id", how="semi"
        ),
        cfg.max_holdout_users,
    )
    held = snapshot(holdout_inputs, plan.holdout, cfg, events=everything, users=held_users)
    metrics = _held_out_metrics(held, _scores(held.frame, booster=booster), cfg)
    if not metrics["model"]["all_users"]:
        raise NotEnoughHistory(
            f"no customer who had bought before {plan.holdout} bought anything in the "
            f"{cfg.horizon_days} days after it: the ranker cannot be judged"
        )

    return MeasuredRanker(plan, booster, learned, held, holdout_inputs, metrics)


def train_recommender(
    wh: Warehouse, last_day: date, cfg: RecommendSettings, *, only_if_due: bool = False
) -> RecommenderTrainReport:
    """Train on candidate snapshots up to ``last_day``; register the ranker if its ONNX export
    passes the parity gate, and promote it if its held-out NDCG is at least the champion's."""
    started = time.perf_counter()
    registry = Registry(wh)
    if only_if_due and (due := training_due(wh, last_day, cfg)) is None:
        champion = registry.champion(MODEL)
        return RecommenderTrainReport(
            trained=False,
            reason=f"champion {champion.version} is fresh" if champion else "no champion",
            top_k=cfg.top_k,
            champion=champion.version if champion else None,
        )
    reason = due if only_if_due else "asked for"
    measured = measure_recommender(wh, last_day, cfg)
    plan, booster, held, metrics = measured.plan, measured.booster, measured.held, measured.metrics
    learned, holdout_inputs = measured.learned, measured.holdout_inputs
    guard = rule_guard(metrics, "all_recall", rec.BASELINES, cfg.rule_margin)
    sample = held.frame.sample(min(held.frame.height, 50_000), seed=cfg.seed)
    exports = tensorised.gated_exports(
        booster,
        train.feature_matrix(sample, list(rec.FEATURES)),
        cfg.parity_tolerance,
        relative=True,
        what="the ranker",
    )
    admitted = admit_trained(
        registry,
        MODEL,
        last_day,
        Trained(exports.tree_ensemble, booster.model_to_string(), exports.tensorised),
        lambda card: _challenge(registry, card, held, cfg),
        code_version=wh.code_version,
        features=[{"name": n, "dtype": "float32"} for n in rec.FEATURES],
        training={
            "last_day": last_day.isoformat(),
            "train_as_of": [d.isoformat() for d in plan.train],
            "holdout_as_of": plan.holdout.isoformat(),
            "horizon_days": cfg.horizon_days,
            "top_k": cfg.top_k,
            **learned,
            "holdout_users": int(metrics["model"]["all_users"] or 0),
        },
        metrics=metrics,
        parity=exports.parity,
        params=ranker_params(cfg, 2) | {"max_rounds": cfg.max_rounds},
        best_iteration=booster.best_iteration or booster.current_iteration(),
        inputs=holdout_inputs.refs[-1:],
        guard=guard,
    )
    return RecommenderTrainReport(
        trained=True,
        reason=f"{reason}; {admitted.why}",
        version=admitted.card.version,
        promoted=admitted.promoted,
        champion=admitted.champion,
        holdout=plan.holdout.isoformat(),
        snapshots=[d.isoformat() for d in plan.train],
        top_k=cfg.top_k,
        metrics=metrics,
        guard=guard,
        parity_max_diff=exports.parity["max_rel_diff"],
        seconds=round(time.perf_counter() - started, 3),
    )


def _held_out_metrics(
    held: Snapshot, scores: np.ndarray, cfg: RecommendSettings
) -> dict[str, dict[str, float | None]]:
    scored = held.frame.select("user_id", "item_id").with_columns(score=pl.Series(scores))
    assert held.truth is not None
    return rec.evaluation(scored, held.users, held.items, held.truth, cfg.top_k, cfg.half_life_days)


def _challenge(
    registry: Registry, card: ModelCard, held: Snapshot, cfg: RecommendSettings
) -> Verdict:
    """Whether the new version's held-out NDCG (repurchases count) ties or beats the
    champion's on the same window."""

    def unfair(old: ModelCard) -> Verdict | None:
        if not computes_features_of(old):
            return True, f"champion {old.version} uses features no longer computed: promoted"
        if old.training["holdout_as_of"] > card.training["holdout_as_of"]:
            return False, f"champion {old.version} was judged on a later window: champion kept"
        return None

    def duel(old: ModelCard) -> Verdict:
        old_scores = _scores(held.frame, onnx_bytes=registry.onnx_bytes(MODEL, old.version))
        old_ndcg = _held_out_metrics(held, old_scores, cfg)["model"]["all_ndcg"] or 0.0
        new_ndcg = card.metrics["model"]["all_ndcg"] or 0.0
        comparison = (
            f"held-out NDCG@{cfg.top_k} {new_ndcg:.4f} vs champion {old.version} {old_ndcg:.4f}"
        )
        return settle(comparison, new_ndcg >= old_ndcg)

    return challenge(registry, card, duel, unfair=unfair)


def _scores(
    frame: pl.DataFrame,
    *,
    booster: lgb.Booster | None = None,
    onnx_bytes: bytes | None = None,
    batch_rows: int = 262_144,
) -> np.ndarray:
    """Ranker scores of the candidates in ``frame``: native LightGBM, or an ONNX graph on the
    CPU."""
    matrix = train.feature_matrix(frame, list(rec.FEATURES))
    if booster is not None:
        # predict() is typed for every input and mode (a list of sparse matrices for pred_contrib
        # on sparse input); a dense matrix without pred_contrib always gives an ndarray.
        return cast(np.ndarray, booster.predict(matrix, num_threads=2))
    if onnx_bytes is None:
        raise TypeError("_scores needs a booster or onnx_bytes")
    return score.predict(score.session(onnx_bytes, [score.CPU]), matrix, batch_rows)


def onnx_scorer(scorer: score.Scorer) -> Callable[[pl.DataFrame], np.ndarray]:
    """A function that scores candidates' features with a registered ranker's ``scorer``."""

    def scores(frame: pl.DataFrame) -> np.ndarray:
        return scorer.predict(train.feature_matrix(frame, list(rec.FEATURES)))

    return scores


@dataclass(frozen=True)
class RankerScorer:
    """Scores candidates' features with a registered ranker; picklable, as its ``registered``."""

    registered: score.RegisteredScorer

    def __call__(self, frame: pl.DataFrame) -> np.ndarray:
        return self.registered(train.feature_matrix(frame, list(rec.FEATURES)))


# ---- nightly lists --------------------------------------------------------------------------


def scoring_model(registry: Registry, as_of: date) -> ModelCard | None:
    """The champion, or for a past ``as_of`` the newest version whose data ends before it; None
    when there is none (the lists are then ranked by the heuristic)."""
    card = registry.trained_before(MODEL, as_of)
    if card is not None and not computes_features_of(card):
        log.warning(
            "recommender %s needs other features than this code computes; retrain it "
            "(nightowl train --model recommender)",
            card.version,
        )
        return None
    return card


def heuristic_scores(frame: pl.DataFrame) -> np.ndarray:
    """Reciprocal-rank fusion of the candidate sources: what ranks lists before a model exists."""
    fused = pl.sum_horizontal(
        [(1.0 / (60 + pl.col(f"{s}_rank"))).fill_null(0.0) for s in rec.SOURCES]
    )
    return frame.select(fused.alias("s"))["s"].to_numpy()


def reason_text(lapsed_days: int | None = None) -> pl.Expr:
    """The reason a marketer reads, from the candidate's first source; for a customer with no
    event in ``lapsed_days``, it says the list is a win-back."""
    days = pl.col("ui_recency_days").round(0).cast(pl.Int64).cast(pl.String)
    viewed = pl.col("ui_viewed_recency_days").round(0).cast(pl.Int64).cast(pl.String)
    times = pl.col("ui_purchase_days").cast(pl.Int64).cast(pl.String)
    anchor = pl.coalesce(pl.col("anchor_title"), pl.col("anchor"))
    reason = (
        pl.when(pl.col("source") == "repeat")
        .then(pl.format("buy again: bought on {} days, last {} days ago", times, days))
        .when(pl.col("source") == "viewed")
        .then(pl.format("viewed {} days ago, not bought yet", viewed))
        .when(pl.col("source") == "cooc")
        .then(pl.format("bought with {}", anchor))
        .when(pl.col("source") == "category")
        .then(pl.format("best seller in {}", pl.col("category")))
        .when(pl.col("source") == "trending")
        .then(
            pl.format(
                "trending: {} sold in the last 7 days", pl.col("item_sales_7d").cast(pl.Int64)
            )
        )
        .otherwise(pl.lit("a best seller"))
    )
    if lapsed_days is not None:
        away = pl.col("user_recency_days").floor().cast(pl.Int64).cast(pl.String)
        reason = (
            pl.when(pl.col("user_recency_days") >= lapsed_days)
            .then(pl.format("win-back, away {} days: {}", away, reason))
            .otherwise(reason)
        )
    return reason.alias("reason")


def ranked_lists(
    frame: pl.DataFrame,
    scores: np.ndarray,
    items: rec.ItemTables,
    k: int,
    model_version: str,
    lapsed_days: int | None = None,
    item_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """The top ``k`` candidates per user: user_id, rank, item_id, title, category, score,
    source, reason (a win-back for users away ``lapsed_days``), model_version; item codes back
    to ids when the keys are coded (``item_ids``)."""
    titles = items.stats.select(
        pl.col("item_id").alias("anchor"), pl.col("title").alias("anchor_title")
    )
    scored = frame.with_columns(score=pl.Series(scores, dtype=pl.Float64))
    top = rec.top_lists(scored, k).join(titles, on="anchor", how="left", maintain_order="left")
    if item_ids is not None:
        top = rec.decoded_items(top, item_ids)
    return top.select(
        "user_id",
        "rank",
        "item_id",
        "title",
        "category",
        "score",
        "source",
        reason_text(lapsed_days),
        pl.lit(model_version).alias("model_version"),
    )


def rule_ranked_lists(
    rule: str,
    ut: rec.UserTables,
    items: rec.ItemTables,
    cfg: RecommendSettings,
    version: str,
    item_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """The top ``top_k`` items per user of ``ut`` by a simple rule (the ranker did not beat it),
    with the same columns and reasons as the ranker's lists (item codes back to ids when the
    keys are coded)."""
    lists = rec.rule_lists(rule, ut, items, cfg.top_k, cfg.half_life_days)
    titles = items.stats.select("item_id", "title", "category", "item_sales_7d")
    anchors = titles.select(
        pl.col("item_id").alias("anchor"), pl.col("title").alias("anchor_title")
    )
    owned = ut.owned.select("user_id", "item_id", "ui_purchase_days", "ui_recency_days")
    described = (
        lists.join(titles, on="item_id", how="left")
        .join(anchors, on="anchor", how="left")
        .join(owned, on=["user_id", "item_id"], how="left")
        .join(ut.profile.select("user_id", "user_recency_days"), on="user_id", how="left")
        .with_columns(ui_viewed_recency_days=pl.lit(None, pl.Float64))
    )
    if item_ids is not None:
        described = rec.decoded_items(described, item_ids)
    return described.sort("user_id", "rank").select(
        "user_id",
        pl.col("rank").cast(pl.Int32),
        "item_id",
        "title",
        "category",
        "score",
        "source",
        reason_text(cfg.lapsed_days),
        pl.lit(version).alias("model_version"),
    )


def _no_lists(version: str) -> pl.DataFrame:
    """An empty ``recommendations`` partition (nobody was active), with the table's columns."""
    schema = {
        "user_id": pl.String,
        "rank": pl.Int32,
        "item_id": pl.String,
        "title": pl.String,
        "category": pl.String,
        "score": pl.Float64,
        "source": pl.String,
        "reason": pl.String,
        "model_version": pl.String,
    }
    return pl.DataFrame(schema=schema)


def buckets(users: pl.DataFrame, per_bucket: int) -> Iterator[pl.DataFrame]:
    """``users`` split by a stable hash of the id into buckets of about ``per_bucket``."""
    n = max(1, math.ceil(users.height / per_bucket))
    if n == 1:
        yield users
        return
    # Not the groups' seed: users of group g (hash % groups == g) would fill only some buckets.
    keyed = users.with_columns(bucket=user_bucket(pl.col("user_id"), n, seed=1))
    for (_,), part in keyed.sort("bucket", "user_id").group_by("bucket", maintain_order=True):
        yield part.drop("bucket")


@dataclass
class BucketStats:
    """What ranking bucket by bucket took: candidates, buckets and seconds per phase (summed
    over the buckets, wherever they ran)."""

    candidates: int = 0
    buckets: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0  # seconds from the first bucket sent out to the last one back
    eligible_items: int = 0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + seconds, 3)


@dataclass(frozen=True)
class Bucket:
    """One unit of ranking work: some users (coded) and their own history alone."""

    users: pl.DataFrame  # user_id
    history: rec.History  # their purchases and browsing; the catalogue and competitor prices


@dataclass(frozen=True)
class Ranked:
    """One bucket's lists (user ids still coded), its candidates and seconds per phase."""

    lists: pl.DataFrame
    candidates: int
    seconds: dict[str, float]


@dataclass(frozen=True)
class BucketRanker:
    """Ranks a ``Bucket`` against the night's shared item tables: candidates, features,
    ``scorer``, top K; or ``rule``'s lists. Picklable, so a bucket may run in a thread, a
    process or on a Dask worker; a user's list reads only that user's rows and the item
    tables, so it is the same wherever the bucket ran."""

    items: rec.ItemTables
    item_ids: pl.Series
    cfg: RecommendSettings
    scorer: Callable[[pl.DataFrame], np.ndarray]
    version: str
    rule: str | None = None

    def __call__(self, bucket: Bucket) -> Ranked:
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[phase] = now - clock
            clock = now

        cfg, items = self.cfg, self.items
        if self.rule is not None:
            ut = rec.user_tables(bucket.history, bucket.users)
            lists = rule_ranked_lists(self.rule, ut, items, cfg, self.version, self.item_ids)
            lap("rule")
            return Ranked(lists, 0, seconds)
        ut = rec.user_tables(bucket.history, bucket.users)
        cands = rec.candidates(ut, items, cfg)
        lap("candidates")
        frame = rec.ranker_features(cands, ut, items, bucket.history)
        lap("features")
        scores = self.scorer(frame)
        lap("scoring")
        top_k, lapsed = cfg.top_k, cfg.lapsed_days
        lists = ranked_lists(frame, scores, items, top_k, self.version, lapsed, self.item_ids)
        lap("top_k")
        return Ranked(lists, frame.height, seconds)


def bucketed_lists(
    history: rec.History,
    users: pl.DataFrame,
    cfg: RecommendSettings,
    scorer: Callable[[pl.DataFrame], np.ndarray],
    version: str,
    *,
    rule: str | None = None,
    browsing: Callable[[pl.Expr], pl.DataFrame] | None = None,
    groups: int = 1,
    fanout: Fanout | None = None,
) -> tuple[pl.DataFrame, BucketStats]:
    """Top-K lists for ``users``, one hash bucket at a time, by ``scorer`` (or ``rule``'s lists)
    over ``history``: users and items are coded to integers once, then each bucket's candidates,
    features, scores and top K are made where ``fanout`` runs it, only one bucket's candidates
    in memory there; with what each phase took.

    With ``groups`` > 1 the users are first split into that many hash groups, and ``browsing``
    loads one group's views and carts (given a predicate on ``user_id``) in place of
    ``history.browsing``: then only one group's browsing is in memory."""
    stats = BucketStats()
    clock = time.perf_counter()
    # Joins, group-bys and sorts run on integers; ids come back at the edge.
    codes = rec.key_codes(history, users)
    history = rec.coded_history(history, codes)
    stats.add("codes", time.perf_counter() - clock)
    clock = time.perf_counter()
    items = rec.item_tables(history, cfg)
    stats.add("item_tables", time.perf_counter() - clock)
    stats.eligible_items = items.eligible.height
    ranker = BucketRanker(items, codes.items, cfg, scorer, version, rule)
    group_of = user_bucket(pl.col("user_id"), groups)
    sizes = users.group_by(group_of.alias("g")).len()["len"] if groups > 1 else [users.height]
    total = sum(max(1, math.ceil(n / cfg.bucket_users)) for n in sizes)

    def pieces() -> Iterator[Bucket]:
        night = history
        for g in range(groups):
            mine = group_of == g
            if browsing is not None:
                began = time.perf_counter()
                night = replace(night, browsing=codes.coded(browsing(mine)))
                stats.add("browsing", time.perf_counter() - began)
            for bucket in buckets(users.filter(mine) if groups > 1 else users, cfg.bucket_users):
                coded = codes.coded(bucket.select("user_id"))
                theirs = {
                    name: getattr(night, name).join(coded, on="user_id", how="semi")
                    for name in ("purchases", "browsing")
                }
                yield Bucket(coded, replace(night, **theirs))

    parts = []
    began = time.perf_counter()
    for ranked in (fanout or Fanout("serial")).map(ranker, pieces()):
        parts.append(ranked.lists)
        for phase, seconds in ranked.seconds.items():
            stats.add(phase, seconds)
        stats.candidates += ranked.candidates
        stats.buckets += 1
        if total > 1:
            log.info(
                "recommendations: bucket %s/%s, %s candidates, %.0f s so far",
                stats.buckets,
                total,
                f"{ranked.candidates:,}",
                time.perf_counter() - began,
            )
    stats.wall = round(time.perf_counter() - began, 3)
    if not parts:
        return _no_lists(version), stats
    lists = pl.concat(parts).sort("user_id", "rank")
    return lists.with_columns(codes.users.gather(lists["user_id"]).alias("user_id")), stats


def listed_users(
    wh: Warehouse, inputs: Inputs, as_of: date, cfg: RecommendSettings
) -> pl.DataFrame:
    """Who gets a list as of ``as_of``: everyone with an event in the last ``active_days``; by
    default (unset) everyone with an event in the history window and every customer who ever
    bought, however long ago (their lists are the best sellers they have not seen)."""
    users = rec.active_users(inputs.events, as_of, cfg.active_days)
    if cfg.active_days is not None:
        return users
    everything, _ = clean_before(wh, CLEAN_EVENTS.name, as_of)
    if everything is None:
        return users
    ever = rec.previous_buyers(everything.select("user_id", "event_type", "event_time"), as_of)
    return pl.concat([users, ever]).unique().sort("user_id")


def recommendations_table(
    wh: Warehouse,
    as_of: date,
    cfg: RecommendSettings,
    scoring: ModelSettings | None = None,
    fanout: Fanout | None = None,
) -> TableReport:
    """Top-K lists for every user ``listed_users`` names as of ``as_of``, ranked by the
    recommender allowed to see that date (else the heuristic, or the simple rule it did not
    beat) → ``recommendations``."""
    started = time.perf_counter()
    inputs = inputs_before(wh, as_of, cfg)
    # Views and carts are most of the events: they are loaded a hash group of users at a time.
    history = rec.history_as_of(
        inputs.events, inputs.items, inputs.market_prices, as_of, cfg, browsing_of=pl.lit(False)
    )
    groups = max(1, math.ceil(inputs.events.select(pl.len()).collect().item() / cfg.group_events))
    users = listed_users(wh, inputs, as_of, cfg)
    prepared = {"history": round(time.perf_counter() - started, 3)}
    registry = Registry(wh)
    card = scoring_model(registry, as_of)
    rule = card.serves_rule if card else None
    version = HEURISTIC if card is None else rule_version(card) if rule else card.version
    ranker = None
    if card is not None and rule is None:
        settings = scoring or ModelSettings()
        ranker = score.RegisteredScorer(str(wh.data_root), MODEL, card.version, settings)
    scores = heuristic_scores if ranker is None else RankerScorer(ranker)

    def browsing(whose: pl.Expr) -> pl.DataFrame:
        return rec.browsing_before(inputs.events, as_of, cfg, whose).collect()

    fanout = fanout or Fanout()
    lists, stats = bucketed_lists(
        history, users, cfg, scores, version, rule=rule, browsing=browsing, groups=groups,
        fanout=fanout,
    )  # fmt: skip
    short = lists.group_by("user_id").len().filter(pl.col("len") < cfg.top_k).height
    notes = {
        "users": users.height,
        "short_lists": short,
        "candidates": stats.candidates,
        "buckets": stats.buckets,
        "groups": groups,
        "fanout": fanout.resolved(),
        "fanout_seconds": stats.wall,
        "seconds_by_phase": prepared | stats.seconds,
        "provider": ranker.opened().provider if ranker else "none",
        "graph": ranker.opened().graph if ranker else "none",
        "catalogue_items": stats.eligible_items,
    }
    if short:
        log.warning(
            "%s of %s users got fewer than %s recommendations: the sources found too few of "
            "the %s eligible items for them (only sold or viewed items are proposed%s)",
            short,
            users.height,
            cfg.top_k,
            stats.eligible_items,
            ", less what each user bought once" if cfg.exclude_bought else "",
        )
    refs = list(inputs.refs)
    if card is not None:
        refs.append(InputRef(kind="model", name=f"models/{MODEL}/{version}", content_hash=version))
    manifest = wh.write_partition(
        RECOMMENDATIONS.layer,
        RECOMMENDATIONS.name,
        {"as_of": as_of.isoformat()},
        lists,
        inputs=refs,
        stats={"model_version": version, **notes},
    )
    return table_report(manifest, started, model_version=version, notes=notes)


def source_mix(wh: Warehouse, report: TableReport) -> list[dict]:
    """Per candidate source of a published ``recommendations`` partition: the recommendations it
    explains, to how many users, and at what mean rank (what the run's artifact shows)."""
    lists = wh.scan(RECOMMENDATIONS.layer, RECOMMENDATIONS.name, [{"as_of": report.as_of}])
    if lists is None:
        return []
    mix = lists.group_by("source").agg(
        pl.len().alias("recommendations"),
        pl.col("user_id").n_unique().alias("users"),
        pl.col("rank").mean().round(2).alias("mean_rank"),
    )
    return mix.sort(["recommendations", "source"], descending=[True, False]).collect().to_dicts()
