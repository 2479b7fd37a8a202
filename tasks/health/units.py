"""``model_health`` and ``model_drift``: did last month's predictions hold up, and do tonight's
inputs still look like what the champions learned from?

Every served night (a prediction partition ``as_of=S``) is judged once its outcomes are in —
propensity and churn after ``[model] horizon_days``, lists after ``[recommend] horizon_days``,
demand once its last target day has passed, sentiment after ``[health] rating_lag_days`` — and
written to ``model_health/as_of=S``: what was served beside the simple rules on the same units.
A served night is judged again only when what it was judged on changed (a corrected delivery,
a late rating): the partition's manifest keeps the fingerprint of its inputs, so nights can be
run, rerun and backfilled in any order and converge to the same figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, Field
from sklearn.metrics import accuracy_score, f1_score

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import (
    FeedbackSettings,
    HealthSettings,
    MarketSettings,
    ModelSettings,
    RecommendSettings,
)
from nightowl.tasks.behaviour import train
from nightowl.tasks.behaviour.units import MODEL as PROPENSITY
from nightowl.tasks.common.reads import catalogue_before
from nightowl.tasks.feedback import sentiment
from nightowl.tasks.feedback.units import MODEL as SENTIMENT
from nightowl.tasks.health import matured as mt
from nightowl.tasks.market import forecast as fc
from nightowl.tasks.market.units import MODEL as DEMAND
from nightowl.tasks.recommend import lists as rec
from nightowl.tasks.recommend.units import MODEL as RECOMMENDER
from nightowl.warehouse.manifest import Manifest, code_version, combined_hash
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CLEAN_EVENTS,
    CLEAN_FEEDBACK,
    DEMAND_FORECAST,
    FEEDBACK_SCORES,
    MODEL_DRIFT,
    MODEL_HEALTH,
    PRICE_POSITION,
    RECOMMENDATIONS,
    USER_FEATURES,
    USER_SCORES,
    Table,
)

log = logging.getLogger("nightowl")

CLASSIFICATION = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
RANKING = ("hit_rate", "recall", "ndcg")
FORECAST = ("wape", "bias", "coverage")
LABELS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class Sections:
    """The settings sections the health step reads."""

    model: ModelSettings
    recommend: RecommendSettings
    market: MarketSettings
    feedback: FeedbackSettings
    health: HealthSettings


class HealthReport(BaseModel):
    """What the model-health step judged, what drifted, and what it alerts about."""

    as_of: str
    #: Served nights judged (or judged again) tonight, and the models judged in each.
    judged: dict[str, list[str]] = Field(default_factory=dict)
    #: Served nights whose figures were already up to date.
    unchanged: int = 0
    rows: int = 0
    drift_rows: int = 0
    drifted: int = 0
    alerts: list[str] = Field(default_factory=list)
    seconds: float = 0.0


# ---- when a served night's outcomes are in --------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """Where one model's served nights are, and when their outcomes are in."""

    table: Table
    #: Days after as_of until the outcomes are in.
    matures: Callable[[Sections], int]


PREDICTIONS: dict[str, Predictions] = {
    PROPENSITY: Predictions(USER_SCORES, lambda s: s.model.horizon_days),
    RECOMMENDER: Predictions(RECOMMENDATIONS, lambda s: s.recommend.horizon_days),
    DEMAND: Predictions(DEMAND_FORECAST, lambda s: s.market.horizon_days),
    SENTIMENT: Predictions(FEEDBACK_SCORES, lambda s: max(1, s.health.rating_lag_days)),
}


def matured_nights(
    wh: Warehouse, as_of: date, sections: Sections
) -> dict[date, dict[str, Manifest]]:
    """Per served night within the look-back whose outcomes are in by ``as_of``: the models
    matured there and their prediction partitions."""
    since = as_of - timedelta(days=sections.health.lookback_days)
    nights: dict[date, dict[str, Manifest]] = {}
    for model, served in PREDICTIONS.items():
        ripe = as_of - timedelta(days=served.matures(sections))
        for m in wh.manifests(served.table.layer, served.table.name):
            night = date.fromisoformat(m.partition[served.table.partition_key])
            if since <= night <= ripe and m.rows:
                nights.setdefault(night, {})[model] = m
    return dict(sorted(nights.items()))


def read_window(model: str, night: date, sections: Sections) -> tuple[date, date]:
    """The days of clean data (from, until: exclusive) a served night of ``model`` is judged
    on: its outcome window, and the history its simple rules are made from."""
    if model == PROPENSITY:  # its rules read the night's own features
        return night, night + timedelta(days=sections.model.horizon_days)
    if model == RECOMMENDER:
        since = night - timedelta(days=sections.recommend.history_days + 1)
        return since, night + timedelta(days=sections.recommend.horizon_days)
    if model == DEMAND:  # seasonal naive: the same weekday a week before
        return night - timedelta(days=7), night + timedelta(days=sections.market.horizon_days)
    # Sentiment: the day the night's new feedback was written, late ratings corrected in.
    return night - timedelta(days=1), night


def fingerprint(
    wh: Warehouse,
    model: str,
    night: date,
    served: Manifest,
    clean: list[Manifest],
    sections: Sections,
) -> str:
    """What a served night's figures of ``model`` are computed from: its prediction partition
    (and features), the ``clean`` partitions of its :func:`read_window`, and the code."""
    since, until = read_window(model, night, sections)
    parts = [code_version(), served.content_hash]
    if model == PROPENSITY:
        features = wh.manifest(
            USER_FEATURES.layer, USER_FEATURES.name, USER_FEATURES.partition(night.isoformat())
        )
        parts.append(features.content_hash if features else "no features")
    source = CLEAN_FEEDBACK.name if model == SENTIMENT else CLEAN_EVENTS.name
    parts += [
        m.content_hash
        for m in clean
        if m.table == source and since.isoformat() <= m.partition["dt"] < until.isoformat()
    ]
    return combined_hash(parts)


# ---- each model, one served night -----------------------------------------------------------


def propensity_rows(
    wh: Warehouse, night: date, events: pl.LazyFrame, sections: Sections
) -> pl.DataFrame:
    """The served purchase probabilities of one night against who bought in the horizon that
    followed (all users), and the served churn risk against who did not (the customers it was
    given for), each beside recency, RFM and BG/NBD on the same users."""
    cfg, bins = sections.model, sections.health.calibration_bins
    horizon = cfg.horizon_days
    scores = _partition(wh, USER_SCORES, night)
    p_column = next(c for c in scores.columns if c.startswith("p_purchase_"))
    features = _partition(wh, USER_FEATURES, night, missing_ok=True)
    bought = _buyers(events, night, horizon)
    frame = scores.with_columns(
        bought=pl.col("user_id").is_in(bought["user_id"].implode()).cast(pl.Int8)
    )
    rules: dict[str, np.ndarray] = {}
    if features is not None and features.height:
        frame = frame.join(features, on="user_id", how="inner", suffix="_f")
        rules = train.baseline_scores(frame, horizon)
    labels = frame["bought"].to_numpy()
    served_p = frame[p_column].to_numpy()
    version = _version(frame)
    end = night + timedelta(days=horizon - 1)
    parts = []
    purchase = mt.Cohort(
        "propensity", version, night, night, end, "all_users", frame.height, "roc_auc"
    )
    curve = mt.reliability(labels, served_p, bins)
    figures = {mt.SERVED: _classification(labels, served_p, curve)}
    figures |= {
        n: train.classification_metrics(labels, s, probabilities=False) for n, s in rules.items()
    }
    parts += [
        mt.judged_rows(purchase, figures, CLASSIFICATION),
        mt.reliability_rows(purchase, curve),
    ]
    given = frame["churn_risk"].is_not_null().to_numpy()
    if given.any():
        churned = 1 - labels[given]
        risk = frame["churn_risk"].to_numpy()[given]
        churn = mt.Cohort(
            "churn", version, night, night, end, "active_customers", int(given.sum()), "roc_auc"
        )
        curve = mt.reliability(churned, risk, bins)
        figures = {mt.SERVED: _classification(churned, risk, curve)}
        figures |= {
            n: train.classification_metrics(churned, -s[given], probabilities=False)
            for n, s in rules.items()
        }
        parts += [mt.judged_rows(churn, figures, CLASSIFICATION), mt.reliability_rows(churn, curve)]
    return pl.concat(parts)


def _classification(labels: np.ndarray, p: np.ndarray, curve: pl.DataFrame) -> dict:
    return train.classification_metrics(labels, p) | {"ece": mt.calibration_error(curve)}


def recommender_rows(
    wh: Warehouse, night: date, events: pl.LazyFrame, sections: Sections
) -> pl.DataFrame:
    """The lists served one night against what their users bought in the horizon that followed
    (every listed user who bought), beside repeat-buy and popularity lists for the same users
    made from the same history."""
    cfg = sections.recommend
    lists = _partition(wh, RECOMMENDATIONS, night)
    truth = rec.purchased_in_window(events, night, cfg.horizon_days).join(
        lists.select("user_id").unique(), on="user_id", how="semi"
    )
    users = truth.select("user_id").unique().sort("user_id")
    if not users.height:
        return pl.DataFrame(schema=MODEL_HEALTH.schema)
    catalogue, _ = catalogue_before(wh, night)
    # Neither rule reads competitor prices or anyone's views.
    history = rec.history_as_of(events, catalogue, None, night, cfg, browsing_of=pl.lit(False))
    items = rec.item_tables(history, cfg)
    ut = rec.rule_user_tables(history, users)
    n_items = catalogue.select(pl.len()).collect().item() if catalogue is not None else 0
    k = cfg.top_k
    served = {mt.SERVED: lists.select("user_id", "item_id", "rank")}
    served |= {
        rule: rec.rule_lists(rule, ut, items, k, cfg.half_life_days)
        for rule in ("repeat_buy", "popularity")
    }
    figures = {
        name: rec.ranking_metrics(ranked, truth, k, n_items)
        | {"hit_rate": _hit_rate(ranked, truth, k)}
        for name, ranked in served.items()
    }
    cohort = mt.Cohort(
        "recommender",
        _version(lists),
        night,
        night,
        night + timedelta(days=cfg.horizon_days - 1),
        "listed_buyers",
        users.height,
        "recall",
    )
    return mt.judged_rows(cohort, figures, RANKING)


def _hit_rate(lists: pl.DataFrame, truth: pl.DataFrame, k: int) -> float | None:
    """The share of ``truth``'s users with at least one of their purchases in their top ``k``."""
    users = truth["user_id"].n_unique()
    if not users:
        return None
    hits = lists.filter(pl.col("rank") <= k).join(truth, on=["user_id", "item_id"], how="semi")
    return hits["user_id"].n_unique() / users


def demand_rows(
    wh: Warehouse, night: date, events: pl.LazyFrame, sections: Sections
) -> pl.DataFrame:
    """The item forecasts served one night against the units sold on their target days, beside
    seasonal naive (the units of the same weekday a week earlier); WAPE, bias and the served
    interval's coverage."""
    served = _partition(wh, DEMAND_FORECAST, night)
    first, last = served["target_date"].min(), served["target_date"].max()
    window = pl.col("event_time").dt.date().is_between(first - timedelta(days=7), last)
    sales = (
        fc.daily_sales(events.filter(window))
        .select("item_id", "date", pl.col(fc.TARGET).alias("units"))
        .collect()
    )
    frame = (
        served.join(
            sales.rename({"date": "target_date"}), on=["item_id", "target_date"], how="left"
        )
        .join(
            sales.select(
                "item_id", pl.col("date") + timedelta(days=7), pl.col("units").alias("naive")
            ),
            left_on=["item_id", "target_date"],
            right_on=["item_id", "date"],
            how="left",
        )
        .with_columns(pl.col("units", "naive").fill_null(0.0))
    )
    actual = frame["units"].to_numpy()
    inside = (frame["units"] >= frame["lower"]) & (frame["units"] <= frame["upper"])
    figures = {
        mt.SERVED: fc.accuracy(actual, frame["forecast"].to_numpy(), float("nan"))
        | {"coverage": float(inside.mean()) if frame.height else None},
        "seasonal_naive": fc.accuracy(actual, frame["naive"].to_numpy(), float("nan")),
    }
    cohort = mt.Cohort(
        "demand", _version(served), night, first, last, "item_days", frame.height, "wape"
    )
    return mt.judged_rows(cohort, figures, FORECAST)


def sentiment_rows(
    wh: Warehouse, night: date, feedback: pl.LazyFrame, sections: Sections
) -> pl.DataFrame:
    """The sentiment labels served one night for that night's new feedback against the ratings
    those items carry now (late corrections too), beside the VADER lexicon's labels of the same
    texts; only texts the serving model had not been trained on."""
    served = _partition(wh, FEEDBACK_SCORES, night)
    # The night's new texts that the text model labelled (not the rating: an empty text's label
    # is its rating's), created after the data the serving version was trained on.
    new = served.filter(
        (pl.col("created_at").dt.date() == night - timedelta(days=1))
        & (pl.col("sentiment_source") != "rating")
        & (pl.col("created_at").dt.date() > trained_until(wh, SENTIMENT, served))
    )
    written = pl.col("created_at").dt.date() == night - timedelta(days=1)
    ratings = (
        feedback.filter(written & pl.col("rating").is_not_null())
        .select("feedback_id", "rating")
        .unique("feedback_id", keep="last", maintain_order=True)
        .collect()
    )
    rated = new.drop("rating").join(ratings, on="feedback_id", how="inner")
    rated = rated.with_columns(truth=sentiment.rating_labels(pl.col("rating")))
    if not rated.height:
        return pl.DataFrame(schema=MODEL_HEALTH.schema)
    lexicon = rated.select(
        sentiment.sentiment_labels(
            pl.Series(sentiment.lexicon_scores(rated["text"])), *sentiment.LEXICON_BAND
        )
    ).to_series()
    truth = rated["truth"].to_list()
    present = sorted(set(truth))
    figures = {
        name: {
            "accuracy": float(accuracy_score(truth, labels)),
            "macro_f1": float(f1_score(truth, labels, average="macro", labels=present)),
        }
        for name, labels in (
            (mt.SERVED, rated["sentiment_label"].fill_null("none").to_list()),
            ("lexicon", lexicon.fill_null("none").to_list()),
        )
    }
    cohort = mt.Cohort(
        "sentiment",
        _version(rated),
        night,
        night - timedelta(days=1),
        night - timedelta(days=1),
        "rated_new_feedback",
        rated.height,
        "macro_f1",
    )
    return mt.judged_rows(cohort, figures, LABELS)


def serving_card(wh: Warehouse, model: str, served: pl.DataFrame) -> ModelCard | None:
    """The card of the version that served a prediction partition (its ``model_version``, or
    the version whose rule was served in its place: ``rule:<rule>@<version>``); None for a rule
    of its own (the lexicon) or a version no longer registered."""
    version = _version(served).rpartition("@")[2]
    try:
        return Registry(wh).card(model, version)
    except (FileNotFoundError, ValueError):
        return None


def trained_until(wh: Warehouse, model: str, served: pl.DataFrame) -> date:
    """The last day of the data the version that served ``served`` was trained on (the
    earliest date when no registered version served it)."""
    card = serving_card(wh, model, served)
    return date.min if card is None else date.fromisoformat(card.training["last_day"])


def _partition(wh: Warehouse, table: Table, night: date, *, missing_ok: bool = False) -> Any:
    frame = wh.scan(table.layer, table.name, [table.partition(night.isoformat())])
    if frame is None:
        if missing_ok:
            return None
        raise NotEnoughHistory(f"{table.path}: no partition as of {night}")
    return frame.collect()


def _buyers(events: pl.LazyFrame, night: date, days: int) -> pl.DataFrame:
    return rec.purchased_in_window(events, night, days).select("user_id").unique()


def _version(frame: pl.DataFrame) -> str:
    """The model version most of a served partition's rows name."""
    return str(frame["model_version"].mode().sort().first())


JUDGES: dict[str, Callable[[Warehouse, date, pl.LazyFrame, Sections], pl.DataFrame]] = {
    PROPENSITY: propensity_rows,
    RECOMMENDER: recommender_rows,
    DEMAND: demand_rows,
    SENTIMENT: sentiment_rows,
}


def judged_night(
    wh: Warehouse,
    night: date,
    models: list[str],
    events: pl.LazyFrame | None,
    feedback: pl.LazyFrame | None,
    sections: Sections,
) -> pl.DataFrame:
    """``models`` of one served night, judged (a model whose outcomes cannot be read is left
    out, with a warning)."""
    parts = [pl.DataFrame(schema=MODEL_HEALTH.schema)]
    for model in models:
        outcomes = feedback if model == SENTIMENT else events
        if outcomes is None:
            continue
        try:
            parts.append(JUDGES[model](wh, night, outcomes, sections))
        except NotEnoughHistory as exc:
            log.warning("%s served as of %s not judged: %s", model, night, exc)
    return pl.concat(parts)


# ---- drift ----------------------------------------------------------------------------------


#: What each champion's drift watches: a table, the kind of its columns, and which columns
#: (None: the model's own inputs, as its card names them; names ending in * are prefixes).
WATCHED: dict[str, tuple[tuple[Table, str, tuple[str, ...] | None], ...]] = {
    PROPENSITY: (
        (USER_FEATURES, "input", None),
        (USER_SCORES, "score", ("p_purchase_*", "churn_risk")),
    ),
    # The demand model's price inputs come from tonight's price position.
    DEMAND: (
        (PRICE_POSITION, "input", ("our_price", "gap_pct", "competitor_median", "competitors")),
        (DEMAND_FORECAST, "score", ("forecast",)),
    ),
    SENTIMENT: (
        (FEEDBACK_SCORES, "input", ("text_chars",)),
        (FEEDBACK_SCORES, "score", ("sentiment_score",)),
    ),
    RECOMMENDER: ((RECOMMENDATIONS, "score", ("score",)),),
}


def champion_drift(
    wh: Warehouse, as_of: date, model: str, health: HealthSettings
) -> pl.DataFrame | None:
    """The watched columns of ``model``'s predictions tonight against the same columns as of
    the training date of the version that served them (the champion, or the one a past date's
    run served with); None when nothing was served tonight by a registered version."""
    served = _partition(wh, PREDICTIONS[model].table, as_of, missing_ok=True)
    card = None if served is None or not served.height else serving_card(wh, model, served)
    if card is None:
        return None
    parts = []
    for table, kind, wanted in WATCHED[model]:
        reference_day = _reference_night(wh, table, card.training["last_day"], as_of)
        tonight = _partition(wh, table, as_of, missing_ok=True)
        if reference_day is None or tonight is None:
            continue
        columns = card.feature_names if wanted is None else _named(tonight.columns, wanted)
        rows = mt.drift_rows(
            _partition(wh, table, reference_day),
            tonight,
            columns,
            kind,
            bins=health.drift_bins,
            psi_threshold=health.psi_threshold,
            missing_threshold=health.missing_threshold,
            exempt=frozenset(health.drift_exempt),
        )
        parts.append(
            rows.select(
                pl.lit(model).alias("model"),
                pl.lit(card.version).alias("model_version"),
                pl.lit(reference_day).alias("reference_as_of"),
                pl.all(),
            )
        )
    return pl.concat(parts) if parts else None


def _named(columns: list[str], wanted: tuple[str, ...]) -> list[str]:
    return [
        c
        for c in columns
        if any(c.startswith(w[:-1]) if w.endswith("*") else c == w for w in wanted)
    ]


def _reference_night(wh: Warehouse, table: Table, last_day: str, as_of: date) -> date | None:
    """The first partition of ``table`` on or after the night a champion trained on data to
    ``last_day`` was made (its training data's end), and before tonight."""
    trained = date.fromisoformat(last_day) + timedelta(days=1)
    nights = sorted(
        date.fromisoformat(m.partition[table.partition_key])
        for m in wh.manifests(table.layer, table.name)
    )
    return next((n for n in nights if trained <= n < as_of), None)


def drift_table(wh: Warehouse, as_of: date, health: HealthSettings) -> pl.DataFrame:
    """Every champion's drift rows tonight (inputs for propensity; served scores for all)."""
    found = [f for m in WATCHED if (f := champion_drift(wh, as_of, m, health)) is not None]
    if not found:
        return pl.DataFrame(schema=MODEL_DRIFT.schema)
    return pl.concat(found).cast(MODEL_DRIFT.schema)


# ---- the step -------------------------------------------------------------------------------


def _before(manifests: list[Manifest], day: date) -> list[Manifest]:
    return [m for m in manifests if m.partition["dt"] < day.isoformat()]


def health_history(wh: Warehouse, until: date | None = None) -> pl.DataFrame:
    """Every ``model_health`` figure of served nights before ``until`` (all when None), with
    the served night as ``as_of``."""
    manifests = [
        m
        for m in wh.manifests(MODEL_HEALTH.layer, MODEL_HEALTH.name)
        if until is None or m.partition["as_of"] < until.isoformat()
    ]
    frame = wh.scan(
        MODEL_HEALTH.layer, MODEL_HEALTH.name, [m.partition for m in manifests],
        partition_columns=True,
    )  # fmt: skip
    if frame is None:
        return pl.DataFrame(schema={**MODEL_HEALTH.schema, "as_of": pl.Date()})
    return frame.with_columns(pl.col("as_of").cast(pl.Date)).collect()


def model_health(wh: Warehouse, as_of: date, sections: Sections) -> HealthReport:
    """Judge every served night whose outcomes came in (or changed) by ``as_of``, write tonight's
    drift, and say what to alert about."""
    started = time.perf_counter()
    report = HealthReport(as_of=as_of.isoformat())
    # Read once: every judged night's fingerprint looks at them.
    clean = {
        t: _before(wh.manifests(t.layer, t.name), as_of) for t in (CLEAN_EVENTS, CLEAN_FEEDBACK)
    }
    events, feedback = (
        wh.scan(t.layer, t.name, [m.partition for m in found], partition_columns=True)
        for t, found in clean.items()
    )
    every = [*clean[CLEAN_EVENTS], *clean[CLEAN_FEEDBACK]]
    for night, served in matured_nights(wh, as_of, sections).items():
        prints = {
            m: fingerprint(wh, m, night, manifest, every, sections)
            for m, manifest in sorted(served.items())
        }
        partition = MODEL_HEALTH.partition(night.isoformat())
        there = wh.manifest(MODEL_HEALTH.layer, MODEL_HEALTH.name, partition)
        known = there.stats.get("fingerprints", {}) if there is not None else {}
        if known == prints:
            report.unchanged += 1
            continue
        # Only the models whose inputs changed (or that just matured) are judged again.
        todo = [m for m in prints if known.get(m) != prints[m]]
        kept = [w for m in prints if m not in todo for w in mt.JUDGED_AS.get(m, (m,))]
        frame = judged_night(wh, night, todo, events, feedback, sections)
        if there is not None and kept:
            earlier = wh.scan(MODEL_HEALTH.layer, MODEL_HEALTH.name, [partition])
            if earlier is not None:
                frame = pl.concat([earlier.filter(pl.col("model").is_in(kept)).collect(), frame])
        # Written even when empty (no unit had an outcome): the fingerprints say it was judged.
        frame = frame.sort("model", "protocol", "scorer", "metric", "bin", nulls_last=False)
        wh.write_partition(
            MODEL_HEALTH.layer,
            MODEL_HEALTH.name,
            partition,
            frame,
            stats={"fingerprints": prints},
        )
        report.judged[night.isoformat()] = sorted(
            w for m in todo for w in mt.JUDGED_AS.get(m, (m,))
        )
        report.rows += frame.height
    drift = drift_table(wh, as_of, sections.health)
    if drift.height:
        wh.write_partition(
            MODEL_DRIFT.layer, MODEL_DRIFT.name, MODEL_DRIFT.partition(as_of.isoformat()), drift
        )
    report.drift_rows, report.drifted = drift.height, int(drift["drifted"].sum())
    health = sections.health
    streaks = mt.losing_streaks(health_history(wh, as_of), health.losing_nights)
    report.alerts = mt.losing_alerts(streaks) + mt.drift_alerts(drift, health.psi_threshold)
    for line in report.alerts:
        log.warning("model health: %s", line)
    report.seconds = round(time.perf_counter() - started, 3)
    return report
