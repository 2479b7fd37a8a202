"""Campaign briefs: per segment, the facts a campaign needs and copy written from them.

``brief_facts`` gathers the facts from the prediction tables (who, how many, the goal, the items
the segment's lists recommend most, the words customers use about those items, when the segment
is active). A :class:`BriefWriter` turns facts into a headline and a message: the default,
:class:`TemplateWriter`, fills templates and needs no network; a text model can stand in for it
by implementing the same one-method interface (``[report] brief_writer = "pkg.module:Class"``).
"""

from __future__ import annotations

import importlib
from datetime import date, timedelta
from typing import Protocol, runtime_checkable

import polars as pl
from pydantic import BaseModel

from nightowl.tasks.behaviour.features import midnight
from nightowl.tasks.feedback import text
from nightowl.tasks.report.kpis import SEGMENT_GOALS

#: Words too plain to quote to customers on their own.
FILLER_WORDS = frozenset({"really", "feels", "use", "got", "bought", "one", "like", "did", "does"})
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class BriefFacts(BaseModel):
    """What a brief is about: everything its copy may say, all from the warehouse."""

    segment: str
    goal: str
    audience: int
    items: list[str]
    categories: list[str]
    words: list[str]
    send_time: str


class BriefCopy(BaseModel):
    """The words of a brief: a headline and a message body."""

    headline: str
    message: str


@runtime_checkable
class BriefWriter(Protocol):
    """Writes a brief's copy from its facts. ``name`` goes into every row it wrote."""

    name: str

    def write(self, facts: BriefFacts) -> BriefCopy: ...


def listed(words: list[str], quote: bool = False) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    shown = [f"“{w}”" if quote else w for w in words]
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + " and " + shown[-1]


#: (headline, opening) per segment; {first}, {items} and {category} are filled from the facts.
TEMPLATES: dict[str, tuple[str, str]] = {
    "champions": (
        "First look for our best customers: {first}",
        "You are one of our best customers, so you see them first: {items}.",
    ),
    "loyal": (
        "Picked for you: {first}",
        "Thank you for coming back. Based on what you love, we picked {items}.",
    ),
    "potential_loyalist": (
        "More of what you like: {first}",
        "You have found a few favourites already. Next on your list: {items}.",
    ),
    "new_customer": (
        "Welcome! Your next favourite could be {first}",
        "Thanks for your first order. Customers who started like you went on to love {items}.",
    ),
    "promising": (
        "Something new in {category}: {first}",
        "Fresh picks in {category} for you: {items}.",
    ),
    "needs_attention": (
        "Don't miss {first}",
        "It has been a little while. Here is what is popular right now: {items}.",
    ),
    "about_to_sleep": (
        "Still thinking of {category}? See {first}",
        "We kept a few things you might like: {items}.",
    ),
    "at_risk": (
        "We miss you: {first} is waiting",
        "It has been a while since your last order. Since then, customers have loved {items}.",
    ),
    "cannot_lose": (
        "A personal pick for you: {first}",
        "You have been one of our best customers, and we would love to see you again. "
        "We chose {items} for you.",
    ),
    "hibernating": (
        "Come back to {first}",
        "A lot has changed since your last visit. Our current favourites: {items}.",
    ),
    "prospect": (
        "Still deciding? {first} is a favourite",
        "Take another look at {items}, our customers' picks in {category}.",
    ),
}
GENERIC = ("Picked for you: {first}", "Our picks for you: {items}.")


class TemplateWriter:
    """Copy from fixed templates per segment, filled with the brief's facts; no network."""

    name = "template-v1"

    def write(self, facts: BriefFacts) -> BriefCopy:
        headline, opening = TEMPLATES.get(facts.segment, GENERIC)
        fields = {
            "first": facts.items[0] if facts.items else "our best sellers",
            "items": listed(facts.items[:3]) or "our best sellers",
            "category": facts.categories[0] if facts.categories else "our shop",
        }
        message = opening.format(**fields)
        if facts.words:
            message += f" What customers say about them: {listed(facts.words[:3], quote=True)}."
        return BriefCopy(headline=headline.format(**fields), message=message)


def brief_writer(spec: str) -> BriefWriter:
    """The writer named by ``spec``: ``template``, or ``package.module:Class`` (built with no
    arguments), checked to have the interface."""
    if spec == "template":
        return TemplateWriter()
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(
            f"report.brief_writer: expected 'template' or 'package.module:Class', got {spec!r}"
        )
    try:
        writer = getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError, TypeError) as exc:  # TypeError: not a class
        raise ValueError(f"report.brief_writer: cannot load {spec!r}: {exc}") from exc
    if not isinstance(writer, BriefWriter):
        raise ValueError(f"report.brief_writer: {spec!r} has no name and write(facts) method")
    return writer


def segment_items(
    user_scores: pl.DataFrame, recommendations: pl.DataFrame, top: int, ranks: int = 3
) -> pl.DataFrame:
    """Per segment, the ``top`` items its users' lists hold most often in their first
    ``ranks`` places (``segment``, ``item_id``, ``title``, ``category``, ``users``, ``place``)."""
    return (
        recommendations.lazy()
        .filter(pl.col("rank") <= ranks)
        .join(user_scores.lazy().select("user_id", "segment"), on="user_id", how="inner")
        .group_by("segment", "item_id")
        .agg(
            pl.len().alias("users"),
            pl.col("title").first(),
            pl.col("category").first(),
        )
        .sort(["segment", "users", "item_id"], descending=[False, True, False])
        .group_by("segment", maintain_order=True)
        .head(top)
        .with_columns(pl.int_range(1, pl.len() + 1).over("segment").alias("place"))
        .collect()
    )


def segment_words(picked: pl.DataFrame, feedback: pl.LazyFrame | None, top: int) -> pl.DataFrame:
    """Per segment, the ``top`` phrases of positive feedback about its picked items
    (``segment``, ``words``): the words customers use about them."""
    schema = pl.Schema({"segment": pl.String(), "words": pl.List(pl.String)})
    if feedback is None or picked.is_empty():
        return pl.DataFrame(schema=schema)
    liked = (
        feedback.filter((pl.col("sentiment_label") == "positive") & pl.col("text").is_not_null())
        .select("item_id", "text")
        .join(picked.lazy().select("segment", "item_id"), on="item_id", how="inner")
    )
    # A phrase made only of the items' own names ("frying pan") says nothing about them.
    named = {
        w.lower()
        for name in pl.concat([picked["title"], picked["category"]]).drop_nulls().to_list()
        for w in name.split()
    }
    only_names = pl.col("phrase").str.split(" ").list.eval(pl.element().is_in(list(named)))
    counts = text.phrase_counts(liked, ["segment"]).filter(
        (pl.col("docs") >= 2) & only_names.list.all().not_()
    )
    # Phrases say more than single words ("fits perfectly" over "really"): they come first.
    multi = pl.col("phrase").str.contains(" ")
    single = multi.not_() & pl.col("phrase").is_in(list(FILLER_WORDS)).not_()
    ranked = [
        text.top_phrases(counts.filter(kind), ["segment"], top).rename({"top_complaints": part})
        for kind, part in ((multi, "_multi"), (single, "_single"))
    ]
    words = (
        ranked[0]
        .join(ranked[1], on="segment", how="full", coalesce=True)
        .select(
            "segment",
            pl.concat_list(
                pl.col("_multi").fill_null(pl.lit([], pl.List(pl.String))),
                pl.col("_single").fill_null(pl.lit([], pl.List(pl.String))),
            )
            .list.head(top)
            .alias("words"),
        )
    )
    return words.collect().cast(schema).sort("segment")


def send_times(
    events: pl.LazyFrame, user_scores: pl.DataFrame, as_of: date, days: int, timezone: str
) -> pl.DataFrame:
    """Per segment, the weekday and hour (in ``timezone``) its users bought most in the ``days``
    before ``as_of`` — their events of any kind when they bought nothing (``segment``,
    ``send_weekday``, ``send_hour``)."""
    recent = events.filter(
        pl.col("user_id").is_not_null()
        & (pl.col("event_time") >= midnight(as_of - timedelta(days=days)))
        & (pl.col("event_time") < midnight(as_of))
    ).join(user_scores.lazy().select("user_id", "segment"), on="user_id", how="inner")
    local = pl.col("event_time").dt.convert_time_zone(timezone)
    slots = (
        recent.with_columns(
            (pl.col("event_type") == "purchase").alias("bought"),
            local.dt.weekday().alias("weekday"),
            local.dt.hour().alias("send_hour"),
        )
        .with_columns(pl.col("bought").any().over("segment").alias("any_bought"))
        .filter(pl.col("bought") | pl.col("any_bought").not_())
        .group_by("segment", "weekday", "send_hour")
        .agg(pl.len().alias("events"))
        .sort(["segment", "events", "weekday", "send_hour"], descending=[False, True, False, False])
        .group_by("segment", maintain_order=True)
        .first()
    )
    return slots.select(
        "segment",
        pl.col("weekday").replace_strict(dict(enumerate(WEEKDAYS, 1))).alias("send_weekday"),
        pl.col("send_hour").cast(pl.Int32),
    ).collect()


def campaign_briefs(
    segments: pl.DataFrame,
    picked: pl.DataFrame,
    words: pl.DataFrame,
    times: pl.DataFrame,
    writer: BriefWriter,
    timezone: str,
    model_version: str | None,
) -> pl.DataFrame:
    """One brief per segment with users: audience, goal, the items to feature and the words
    customers use about them, the writer's headline and message, and when to send it."""
    rows = []
    items = {s: g.sort("place") for (s,), g in picked.group_by("segment")}
    said = {r["segment"]: r["words"] for r in words.iter_rows(named=True)}
    when = {r["segment"]: r for r in times.iter_rows(named=True)}
    for seg in segments.sort(["users", "segment"], descending=[True, False]).iter_rows(named=True):
        mine = items.get(seg["segment"])
        slot = when.get(seg["segment"], {})
        send = (
            f"{slot['send_weekday']} {slot['send_hour']:02d}:00 {timezone}"
            if slot.get("send_weekday")
            else None
        )
        categories = (
            mine.group_by("category")
            .agg(pl.col("users").sum())
            .sort(["users", "category"], descending=[True, False])["category"]
            .drop_nulls()
            .to_list()
            if mine is not None
            else []
        )
        facts = BriefFacts(
            segment=seg["segment"],
            goal=seg["goal"] or SEGMENT_GOALS.get(seg["segment"], "engage"),
            audience=seg["users"],
            items=mine["title"].fill_null(mine["item_id"]).to_list() if mine is not None else [],
            categories=categories,
            words=list(said.get(seg["segment"]) or []),
            send_time=send or "",
        )
        copy = writer.write(facts)
        rows.append(
            {
                "segment": facts.segment,
                "audience": facts.audience,
                "goal": facts.goal,
                "top_item_ids": mine["item_id"].to_list() if mine is not None else [],
                "top_items": facts.items,
                "top_categories": facts.categories,
                "customer_words": facts.words,
                "headline": copy.headline,
                "message": copy.message,
                "send_weekday": slot.get("send_weekday"),
                "send_hour": slot.get("send_hour"),
                "send_time": send,
                "writer": writer.name,
                "model_version": model_version,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "segment": pl.String,
            "audience": pl.Int64,
            "goal": pl.String,
            "top_item_ids": pl.List(pl.String),
            "top_items": pl.List(pl.String),
            "top_categories": pl.List(pl.String),
            "customer_words": pl.List(pl.String),
            "headline": pl.String,
            "message": pl.String,
            "send_weekday": pl.String,
            "send_hour": pl.Int32,
            "send_time": pl.String,
            "writer": pl.String,
            "model_version": pl.String,
        },
    )
