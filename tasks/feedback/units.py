"""Feedback intelligence: the sentiment model's training, and the nightly feedback tables.

``train_sentiment`` fits the TF-IDF logistic regression of ``tasks.sentiment`` on the rated
feedback, holds out the newest share, compares it with the VADER lexicon, exports it to ONNX,
checks parity and registers it. ``feedback_scores_table`` scores every recent feedback item with
the champion (or the lexicon, while too few ratings exist); ``product_sentiment_table`` and
``support_queue_table`` read those scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import numpy as np
import polars as pl

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import FeedbackSettings
from nightowl.tasks.common.reads import catalogue_before, clean_before
from nightowl.tasks.common.reports import TableReport, table_report
from nightowl.tasks.feedback import sentiment, support, text
from nightowl.tasks.models import score
from nightowl.tasks.models.export import ParityFailed
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
from nightowl.warehouse.landing import LandingError, knowledge_base
from nightowl.warehouse.manifest import InputRef, Manifest
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CLEAN_FEEDBACK,
    FEEDBACK_SCORES,
    PRODUCT_SENTIMENT,
    SUPPORT_QUEUE,
    USER_SCORES,
)

log = logging.getLogger("nightowl")

MODEL = "sentiment"
#: How ``nightowl models`` lists its versions.
VERSIONS = VersionsView(
    "sentiment models (newest rated texts held out: model and the VADER lexicon)",
    (
        Figure("held-out", lambda c: c.training["holdout_rows"], ""),
        Figure("macro-F1", lambda c: c.metrics["model"]["macro_f1"], ".3f"),
        Figure("accuracy", lambda c: c.metrics["model"]["accuracy"], ".3f"),
        Figure("AUC", lambda c: c.metrics["model"]["roc_auc"]),
        Figure("lexicon F1", lambda c: c.metrics["lexicon"]["macro_f1"], ".3f"),
        Figure("lexicon AUC", lambda c: c.metrics["lexicon"]["roc_auc"]),
        Figure("terms", lambda c: c.params["terms"], ""),
        Figure("parity", lambda c: c.parity["max_abs_diff"], ".1g"),
    ),
)
NATIVE_FILE = "model.json"
#: Texts every parity check also scores: nothing, only emojis, unseen words, one long text.
EDGE_TEXTS = ["", "😍😍😍", "qwzx vbnm", "great " * 400, "très bien, 非常好", "not not not bad"]
#: Rated texts of each polarity training needs (cross-validation splits them three ways).
MIN_PER_SIDE = 10
#: Segments of user_scores whose tickets count as from high-value customers.
HIGH_VALUE_SEGMENTS = ("champions", "loyal", "cannot_lose")


class SentimentTrainReport(TrainOutcome):
    """What one sentiment training did, and how many rated texts it had."""

    labelled: int = 0


# ---- training -------------------------------------------------------------------------------


def rated_texts(feedback: pl.LazyFrame) -> pl.DataFrame:
    """Feedback with text and a rating, oldest first, with the rating's sentiment ``truth``."""
    return (
        feedback.filter(pl.col("rating").is_not_null() & (pl.col("text").str.len_chars() > 0))
        .select("feedback_id", "created_at", "text", "rating")
        .with_columns(sentiment.rating_labels(pl.col("rating")).alias("truth"))
        .sort("created_at", "feedback_id")
        .collect()
    )


def training_labels(truth: pl.Series) -> pl.Series:
    """1 for positive, 0 for negative, null for neutral: what the regression fits."""
    return truth.replace_strict({"positive": 1.0, "negative": 0.0, "neutral": None}, default=None)


def rated_up_to(
    wh: Warehouse, last_day: date, cfg: FeedbackSettings, instead: str
) -> tuple[pl.DataFrame, list[InputRef]]:
    """The rated feedback texts up to ``last_day`` (``rated_texts``) and their partitions;
    ``NotEnoughHistory``, saying what happens ``instead``, with fewer than ``min_labelled``."""
    feedback, refs = clean_before(wh, CLEAN_FEEDBACK.name, last_day + timedelta(days=1))
    rated = rated_texts(feedback) if feedback is not None else pl.DataFrame()
    if rated.height < cfg.min_labelled:
        raise NotEnoughHistory(
            f"{rated.height} rated feedback texts up to {last_day}, fewer than "
            f"feedback.min_labelled = {cfg.min_labelled}: {instead}"
        )
    return rated, refs


def fitted_sentiment(
    texts: pl.Series, labels: pl.Series, cfg: FeedbackSettings
) -> sentiment.SentimentModel:
    """``sentiment.fit_sentiment`` with the vocabulary and regularisation settings of ``cfg``."""
    return sentiment.fit_sentiment(
        texts, labels, min_df=cfg.min_df, max_terms=cfg.max_terms, c_grid=tuple(cfg.c_grid)
    )


def training_due(wh: Warehouse, last_day: date, cfg: FeedbackSettings) -> str | None:
    """Why a sentiment model should be trained with data up to ``last_day`` (None: fresh)."""
    # Sentiment looks no time ahead: horizon 0 keeps the shared cadence rule's card field.
    return cadence_due(Registry(wh), MODEL, last_day, 0, cfg.retrain_every_days)


def train_sentiment(
    wh: Warehouse, last_day: date, cfg: FeedbackSettings, *, only_if_due: bool = False
) -> SentimentTrainReport:
    """Train on rated feedback up to ``last_day``; register the model if it passes the parity
    gate and promote it if it ranks the held-out texts at least as well as the champion."""
    started = time.perf_counter()
    registry = Registry(wh)
    if only_if_due and (due := training_due(wh, last_day, cfg)) is None:
        champion = registry.champion(MODEL)
        return SentimentTrainReport(
            trained=False,
            reason=f"champion {champion.version} is fresh" if champion else "no champion",
            champion=champion.version if champion else None,
        )
    reason = due if only_if_due else "asked for"
    rated, refs = rated_up_to(wh, last_day, cfg, "the VADER lexicon scores sentiment")
    split = int(rated.height * (1 - cfg.holdout_share))
    fit_rows, holdout = rated.head(split), rated.slice(split)
    by_label = dict(fit_rows["truth"].value_counts().iter_rows())
    if min(by_label.get("positive", 0), by_label.get("negative", 0)) < MIN_PER_SIDE:
        raise NotEnoughHistory(
            f"the rated feedback up to {last_day} has {by_label.get('positive', 0)} positive "
            f"(4-5 stars) and {by_label.get('negative', 0)} negative (1-2 stars) texts to learn "
            f"from; at least {MIN_PER_SIDE} of each are needed: the VADER lexicon scores sentiment"
        )
    model = fitted_sentiment(fit_rows["text"], training_labels(fit_rows["truth"]), cfg)
    onnx_bytes = sentiment.onnx_from_model(model)
    sess = score.session(onnx_bytes, [score.CPU])
    probe = pl.concat([holdout["text"], pl.Series(EDGE_TEXTS)])
    onnx_probe = sentiment.onnx_scores(sess, probe)
    max_diff = sentiment.max_abs_diff(onnx_probe, sentiment.native_scores(model, probe))
    if not max_diff <= cfg.parity_tolerance:
        raise ParityFailed(
            f"sentiment ONNX export differs from the fitted model by {max_diff:.3g} on "
            f"{len(probe)} held-out and edge texts (tolerance {cfg.parity_tolerance:g}); "
            "the model was not registered"
        )
    band = (model.negative_below, model.positive_from)
    held = onnx_probe[: holdout.height]
    metrics = {
        "model": sentiment.sentiment_metrics(holdout["truth"], held, *band),
        "lexicon": sentiment.sentiment_metrics(
            holdout["truth"], sentiment.lexicon_scores(holdout["text"]), *sentiment.LEXICON_BAND
        ),
    }
    guard = rule_guard(metrics, "macro_f1", ("lexicon",), cfg.rule_margin)
    native = json.dumps(
        {
            "terms": model.vocab.terms,
            "idf": model.vocab.idf.tolist(),
            "coef": model.coef.tolist(),
            "intercept": model.intercept,
            "band": band,
        }
    )
    admitted = admit_trained(
        registry,
        MODEL,
        last_day,
        Trained(onnx_bytes, native, native_name=NATIVE_FILE),
        lambda card: _challenge(registry, card, holdout),
        code_version=wh.code_version,
        features=[
            {"name": sentiment.TERMS, "dtype": "int64"},
            {"name": sentiment.COUNTS, "dtype": "float32"},
        ],
        training={
            "last_day": last_day.isoformat(),
            "horizon_days": 0,
            "fit_until": str(fit_rows["created_at"].max()),
            "holdout_from": str(holdout["created_at"].min()),
            "rows": fit_rows.height,
            "by_label": by_label,
            "holdout_rows": holdout.height,
        },
        metrics=metrics,
        parity={"max_abs_diff": max_diff, "rows": len(probe), "tolerance": cfg.parity_tolerance},
        params=model.params,
        best_iteration=0,
        inputs=refs,
        guard=guard,
    )
    return SentimentTrainReport(
        trained=True,
        reason=f"{reason}; {admitted.why}",
        version=admitted.card.version,
        promoted=admitted.promoted,
        champion=admitted.champion,
        labelled=rated.height,
        metrics=metrics,
        guard=guard,
        parity_max_diff=max_diff,
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass(frozen=True)
class MeasuredSentiment:
    """One slice of the newest rated texts, scored by a model fitted on the texts before it,
    the lexicon and a plain TF-IDF + logistic regression reference."""

    origin: date
    holdout_rows: int
    metrics: dict[str, dict[str, float | None]]


def measure_sentiment(
    wh: Warehouse, last_day: date, cfg: FeedbackSettings, *, slices: int, slice_no: int
) -> MeasuredSentiment:
    """Cut the newest ``slices * holdout_share`` of the rated texts up to ``last_day`` into
    ``slices`` slices; fit on everything before slice ``slice_no`` (1: the newest) and judge
    the labels and scores on it."""
    rated, _ = rated_up_to(wh, last_day, cfg, "no sentiment model to evaluate")
    share = min(cfg.holdout_share, 0.8 / slices)  # at least a fifth is always left to fit on
    start = int(rated.height * (1 - slice_no * share))
    end = int(rated.height * (1 - (slice_no - 1) * share))
    fit_rows, holdout = rated.head(start), rated.slice(start, end - start)
    labels = training_labels(fit_rows["truth"])
    model = fitted_sentiment(fit_rows["text"], labels, cfg)
    truth = holdout["truth"]
    metrics = {
        "model": sentiment.sentiment_metrics(
            truth,
            sentiment.native_scores(model, holdout["text"]),
            model.negative_below,
            model.positive_from,
        ),
        "lexicon": sentiment.sentiment_metrics(
            truth, sentiment.lexicon_scores(holdout["text"]), *sentiment.LEXICON_BAND
        ),
        "tfidf_lr": sentiment.sentiment_metrics(
            truth, sentiment.reference_scores(fit_rows["text"], labels, holdout["text"]), 0.5, 0.5
        ),
    }
    origin = cast(datetime, holdout["created_at"].min()).date()
    return MeasuredSentiment(origin, holdout.height, metrics)


def _challenge(registry: Registry, card: ModelCard, holdout: pl.DataFrame) -> Verdict:
    """Whether the new version ranks this held-out window at least as well as the champion."""

    def unfair(old: ModelCard) -> Verdict | None:
        if old.training["fit_until"] >= card.training["holdout_from"]:
            # It learnt from some of these texts: no fair comparison exists on them.
            return False, (
                f"champion {old.version} was fitted on feedback up to "
                f"{old.training['fit_until']}, inside this model's held-out window: champion kept"
            )
        return None

    def duel(old: ModelCard) -> Verdict:
        old_sess = score.session(registry.onnx_bytes(MODEL, old.version), [score.CPU])
        old_scores = sentiment.onnx_scores(old_sess, holdout["text"])
        old_auc = sentiment.sentiment_metrics(holdout["truth"], old_scores, 0.5, 0.5)["roc_auc"]
        new_auc = card.metrics["model"]["roc_auc"]
        if old_auc is None or new_auc is None:
            return True, "the held-out texts are all of one sentiment: newest model promoted"
        comparison = f"held-out AUC {new_auc:.4f} vs champion {old.version} {old_auc:.4f}"
        # float32 scoring of the same texts can differ in the last bits: a tie is a tie.
        return settle(comparison, new_auc >= old_auc - 1e-9)

    return challenge(registry, card, duel, unfair=unfair)


def scoring_model(registry: Registry, as_of: date) -> ModelCard | None:
    """The champion, or for a past ``as_of`` the newest version trained on data before it;
    None when there is none (the lexicon scores)."""
    return registry.trained_before(MODEL, as_of)


# ---- feedback_scores ------------------------------------------------------------------------


def feedback_partitions(wh: Warehouse, as_of: date, cfg: FeedbackSettings) -> list[Manifest]:
    """The clean feedback partitions feedback_scores as of ``as_of`` reads."""
    first = as_of - timedelta(days=cfg.history_days)
    return [
        m
        for m in wh.manifests(CLEAN_FEEDBACK.layer, CLEAN_FEEDBACK.name)
        if first.isoformat() <= m.partition["dt"] < as_of.isoformat()
    ]


def scored_feedback(
    feedback: pl.DataFrame,
    scores: np.ndarray,
    band: tuple[float, float],
    source: str,
    model_version: str,
    aspects: dict[str, list[str]],
) -> pl.DataFrame:
    """Each feedback item with its sentiment (from ``scores``; from the rating where the text
    is empty), label, source, aspects and model version."""
    empty = pl.col("text").fill_null("").str.len_chars() == 0
    from_rating = ((pl.col("rating") - 1) / 4).cast(pl.Float64)
    sentiment_score = (
        pl.when(empty).then(from_rating).otherwise(pl.Series(scores, dtype=pl.Float64))
    )
    rating_band = sentiment.sentiment_labels(from_rating, 0.375, 0.625)  # 1-2 / 3 / 4-5 stars
    return feedback.select(
        "feedback_id",
        "created_at",
        "user_id",
        "item_id",
        "channel",
        "rating",
        sentiment_score.alias("sentiment_score"),
        pl.when(empty)
        .then(rating_band)
        .otherwise(sentiment.sentiment_labels(pl.Series(scores), *band))
        .alias("sentiment_label"),
        pl.when(empty).then(pl.lit("rating")).otherwise(pl.lit(source)).alias("sentiment_source"),
        text.aspects(pl.col("text").fill_null(""), aspects).alias("aspects"),
        "title",
        "text",
        "pii",
        "text_chars",
        pl.lit(model_version).alias("model_version"),
    )


def feedback_scores_table(wh: Warehouse, as_of: date, cfg: FeedbackSettings) -> TableReport:
    """Score the feedback of the ``history_days`` before ``as_of``; publish feedback_scores."""
    started = time.perf_counter()
    parts = feedback_partitions(wh, as_of, cfg)
    if not parts:
        raise NotEnoughHistory(f"no clean feedback in the {cfg.history_days} days before {as_of}")
    frame = wh.scan_published(
        CLEAN_FEEDBACK.layer, CLEAN_FEEDBACK.name, [m.partition for m in parts]
    )
    feedback = frame.sort("created_at", "feedback_id").collect()
    registry = Registry(wh)
    card = scoring_model(registry, as_of)
    texts = feedback["text"].fill_null("")
    inputs = [m.ref for m in parts]
    if card is None or card.serves_rule:
        scores = sentiment.lexicon_scores(texts)
        band, source, version = sentiment.LEXICON_BAND, "lexicon", lexicon_version()
        if card is not None:  # the model did not beat the lexicon on its held-out texts
            version = rule_version(card, version)
    else:
        # CPU on purpose: per text the graph does a gather and a sum, too little to pay for
        # copying the batch to a GPU and back (the tokenising, in Polars, is the real work).
        sess = score.session(registry.onnx_bytes(MODEL, card.version), [score.CPU])
        scores = sentiment.onnx_scores(sess, texts).astype(np.float64)
        band = (card.params["negative_below"], card.params["positive_from"])
        source, version = "model", card.version
        inputs.append(
            InputRef(kind="model", name=f"models/{MODEL}/{version}", content_hash=version)
        )
    table = scored_feedback(feedback, scores, band, source, version, cfg.aspects)
    notes = {
        "sentiment_source": source,
        "provider": score.CPU if card is not None else "python",
        "truncated_texts": int((feedback["text_chars"] > cfg.max_text_chars).sum()),
        "texts_with_pii": int((feedback["pii"].list.len() > 0).sum()),
    }
    m = wh.write_partition(
        FEEDBACK_SCORES.layer,
        FEEDBACK_SCORES.name,
        {"as_of": as_of.isoformat()},
        table,
        inputs=inputs,
        stats=notes | {"model_version": version},
    )
    return table_report(m, started, model_version=version, notes=notes)


def faq_fingerprint(wh: Warehouse, config_dir: str, faq: str | None) -> str:
    """The FAQ's content hash (so an edited FAQ re-triages); "none" without one."""
    try:
        found = knowledge_base(wh.data_root, config_dir, faq)
    except LandingError:
        return "missing"  # the step itself says what is wrong
    return hashlib.sha256(found[0].encode()).hexdigest() if found else "none"


def faq_frame(wh: Warehouse, config_dir: str, faq: str | None) -> pl.DataFrame:
    """The FAQ entries (faq_id, question, answer); none when no knowledge base is given."""
    found = knowledge_base(wh.data_root, config_dir, faq)
    if found is None:
        return pl.DataFrame(
            schema={"faq_id": pl.String, "question": pl.String, "answer": pl.String}
        )
    return support.faq_entries(*found)


def lexicon_version() -> str:
    """The lexicon scorer's name and package version, what model_version says when it scored."""
    from importlib.metadata import version

    return f"{sentiment.LEXICON}-{version('vaderSentiment')}"


# ---- product_sentiment ----------------------------------------------------------------------


def product_sentiment(
    scores: pl.LazyFrame, items: pl.LazyFrame | None, days: list[date], top: int, window: int
) -> pl.LazyFrame:
    """Per item and per category and day of ``days``: feedback count, mean rating, mean
    sentiment, negative share, and the top complaint phrases of the ``window`` days up to it."""
    catalogue = (
        items.select("item_id", "category").unique("item_id")
        if items is not None
        else pl.LazyFrame(schema={"item_id": pl.String, "category": pl.String})
    )
    rows = (
        scores.filter(pl.col("item_id").is_not_null())
        .with_columns(pl.col("created_at").dt.date().alias("day"))
        .join(catalogue, on="item_id", how="left")
    )
    # One key per level: a null category must not hide an item's rows from a join.
    levels = {"item": ["item_id"], "category": ["category"]}
    frames = []
    for level, keys in levels.items():
        keyed = rows.filter(pl.col("category").is_not_null()) if level == "category" else rows
        daily = (
            keyed.filter(pl.col("day").is_in(days))
            .group_by(*keys, "day")
            .agg(
                pl.len().alias("feedback"),
                pl.col("rating").mean().alias("mean_rating"),
                # Rounded: a float sum's last bits depend on the threads' order, the bytes must not.
                pl.col("sentiment_score").mean().round(9).alias("mean_sentiment"),
                (pl.col("sentiment_label") == "negative").mean().alias("negative_share"),
            )
        )
        complaints = _window_complaints(keyed, keys, days, top, window)
        joined = daily.join(complaints, on=[*keys, "day"], how="left")
        if level == "item":
            joined = joined.join(catalogue, on="item_id", how="left")
        frames.append(
            joined.with_columns(
                pl.lit(level).alias("level"),
                pl.col("top_complaints").fill_null(pl.lit([], dtype=pl.List(pl.String))),
                *([pl.lit(None, pl.String).alias("item_id")] if level == "category" else []),
            ).select(
                "level",
                "item_id",
                "category",
                "day",
                "feedback",
                "mean_rating",
                "mean_sentiment",
                "negative_share",
                "top_complaints",
            )
        )
    return pl.concat(frames).sort("level", "category", "item_id", "day", nulls_last=True)


def _window_complaints(
    rows: pl.LazyFrame, keys: list[str], days: list[date], top: int, window: int
) -> pl.LazyFrame:
    """Top complaint phrases per ``keys`` and day: negative feedback of the ``window`` days up
    to and including that day."""
    negative = rows.filter(
        (pl.col("sentiment_label") == "negative") & (pl.col("day") > min(days) - timedelta(window))
    )
    counts = text.phrase_counts(negative.select(*keys, "day", "text"), [*keys, "day"])
    # A day's phrases count for it and the window - 1 days after it.
    spread = (
        counts.with_columns(pl.int_ranges(0, window).alias("_offset"))
        .explode("_offset")
        .with_columns((pl.col("day") + pl.duration(days=pl.col("_offset"))).alias("day"))
        .filter(pl.col("day").is_in(days))
        .group_by(*keys, "day", "phrase")
        .agg(pl.col("docs").sum())
    )
    return text.top_phrases(spread, [*keys, "day"], top)


def product_sentiment_table(
    wh: Warehouse, as_of: date, cfg: FeedbackSettings, scores: TableReport
) -> TableReport:
    """Publish product_sentiment for the ``window_days`` before ``as_of``."""
    started = time.perf_counter()
    frame = wh.scan_published(
        FEEDBACK_SCORES.layer, FEEDBACK_SCORES.name, [{"as_of": scores.as_of}]
    )
    items, items_refs = catalogue_before(wh, as_of)
    days = [as_of - timedelta(days=d) for d in range(cfg.window_days, 0, -1)]
    table = product_sentiment(frame, items, days, cfg.top_complaints, cfg.window_days).collect()
    inputs = [
        InputRef(
            kind="partition",
            name=f"{FEEDBACK_SCORES.path}/as_of={scores.as_of}",
            content_hash=scores.content_hash,
        )
    ]
    inputs += items_refs
    m = wh.write_partition(
        PRODUCT_SENTIMENT.layer,
        PRODUCT_SENTIMENT.name,
        {"as_of": as_of.isoformat()},
        table.with_columns(pl.lit(scores.model_version).alias("model_version")),
        inputs=inputs,
    )
    return table_report(m, started, model_version=scores.model_version)


# ---- support_queue --------------------------------------------------------------------------


def support_queue(
    scores: pl.DataFrame,
    since: datetime,
    faq: pl.DataFrame,
    high_value: pl.DataFrame | None,
    cfg: FeedbackSettings,
) -> pl.DataFrame:
    """Support tickets created from ``since`` on, most urgent first: topic, urgency and its
    reasons, and the closest FAQ answer (none when nothing is similar enough)."""
    tickets_all = scores.filter(pl.col("channel") == "support")
    tickets = tickets_all.filter(pl.col("created_at") >= since)
    negativity = (1 - pl.col("sentiment_score")).alias("negativity")
    urgency = support.urgency_scores(
        tickets.select("feedback_id", "user_id", "created_at", "text", negativity),
        tickets_all.select("user_id", "created_at"),
        high_value,
        cfg.repeat_window_days,
    )
    answers = support.suggested_answers(
        tickets.select("feedback_id", "title", "text"), faq, cfg.min_answer_similarity
    )
    topic = pl.col("aspects").list.first().fill_null("other").alias("topic")
    return (
        tickets.select(
            "feedback_id",
            "created_at",
            "user_id",
            "item_id",
            topic,
            "aspects",
            "title",
            "text",
            "sentiment_score",
            "sentiment_label",
            "model_version",
        )
        .join(urgency, on="feedback_id", how="left")
        .join(answers, on="feedback_id", how="left")
        .sort(["urgency", "created_at", "feedback_id"], descending=[True, False, False])
        .with_row_index("rank", offset=1)
    )


def queue_top(wh: Warehouse, report: TableReport, n: int) -> list[dict[str, Any]]:
    """The ``n`` most urgent tickets of a published support_queue, as short rows for people."""
    frame = wh.scan(SUPPORT_QUEUE.layer, SUPPORT_QUEUE.name, [{"as_of": report.as_of}])
    if frame is None:
        return []
    top = (
        frame.sort("rank")
        .head(n)
        .select(
            "rank",
            "topic",
            pl.col("urgency").round(2),
            pl.col("urgency_reasons").list.join("; ").alias("why"),
            pl.col("text").str.slice(0, 140).alias("ticket"),
            pl.col("faq_question").alias("suggested answer"),
        )
    )
    return top.collect().to_dicts()


def high_value_users(wh: Warehouse, as_of: date) -> tuple[pl.DataFrame | None, list[InputRef]]:
    """Users whose latest user_scores segment (before or on ``as_of``) is a high-value one."""
    parts = [
        m
        for m in wh.manifests(USER_SCORES.layer, USER_SCORES.name)
        if m.partition["as_of"] <= as_of.isoformat()
    ]
    if not parts:
        return None, []
    frame = wh.scan_published(USER_SCORES.layer, USER_SCORES.name, [parts[-1].partition])
    users = frame.filter(pl.col("segment").is_in(HIGH_VALUE_SEGMENTS)).select("user_id").collect()
    return users, [parts[-1].ref]


def support_queue_table(
    wh: Warehouse, as_of: date, cfg: FeedbackSettings, scores: TableReport, config_dir: str
) -> TableReport:
    """Publish support_queue: the support tickets of the ``queue_days`` before ``as_of``."""
    started = time.perf_counter()
    frame = wh.scan_published(
        FEEDBACK_SCORES.layer, FEEDBACK_SCORES.name, [{"as_of": scores.as_of}]
    ).collect()
    faq = faq_frame(wh, config_dir, cfg.faq)
    high_value, refs = high_value_users(wh, as_of)
    start = as_of - timedelta(days=cfg.queue_days)
    since = datetime(start.year, start.month, start.day, tzinfo=UTC)
    table = support_queue(frame, since, faq, high_value, cfg)
    inputs = [
        InputRef(
            kind="partition",
            name=f"{FEEDBACK_SCORES.path}/as_of={scores.as_of}",
            content_hash=scores.content_hash,
        ),
        *refs,
    ]
    m = wh.write_partition(
        SUPPORT_QUEUE.layer,
        SUPPORT_QUEUE.name,
        {"as_of": as_of.isoformat()},
        table,
        inputs=inputs,
        stats={"faq_entries": faq.height},
    )
    suggested = int(table["faq_id"].is_not_null().sum()) if table.height else 0
    return table_report(
        m,
        started,
        model_version=scores.model_version,
        notes={"faq_entries": faq.height, "with_answer": suggested},
    )
