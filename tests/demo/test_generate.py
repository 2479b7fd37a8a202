"""Tests for the synthetic landing-data generator (nightowl/demo/generate.py)."""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightowl.demo.generate import (
    DIRT_RATES,
    EVENT_COLUMNS,
    EVENT_TYPES,
    FEEDBACK_COLUMNS,
    INDICATOR_COLUMNS,
    ITEM_COLUMNS,
    MARKET_PRICE_COLUMNS,
    PAYMENT_URGENCY_PHRASES,
    REVIEW_CLOSERS,
    SOURCES,
    UNKNOWN_EVENT_TYPES,
    URGENCY_PHRASES,
    GenerateSummary,
    generate_landing,
    purchase_given_visit,
)

END = date(2026, 11, 27)
SUFFIX = {
    "events": ".csv",
    "items": ".jsonl",
    "feedback": ".jsonl",
    "market_prices": ".parquet",
    "market_indicators": ".csv.gz",
}
MEDIUM = {"users": 4000, "items": 150, "days": 45, "eval_days": 14, "seed": 11}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    out = tmp_path_factory.mktemp("small")
    return generate_landing(out, users=300, items=40, days=12, eval_days=5, end_date=END)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    out = tmp_path_factory.mktemp("medium")
    return generate_landing(out, end_date=END, **MEDIUM)


def expected_names(end_date: date, days: int, suffix: str) -> list[str]:
    return [f"{(end_date - timedelta(days=k)).isoformat()}{suffix}" for k in range(days)][::-1]


def read_events(out: Path) -> pl.DataFrame:
    """All event rows as strings, with the file's date and a parsed UTC timestamp."""
    frames = [
        pl.read_csv(path, infer_schema=False).with_columns(
            file_date=pl.lit(date.fromisoformat(path.name[:10])),
            file_row=pl.int_range(pl.len()),
        )
        for path in sorted((out / "events").glob("*.csv"))
    ]
    return pl.concat(frames).with_columns(
        ts=pl.col("event_time")
        .str.replace(r"Z$", "+00:00")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%z", strict=False, time_zone="UTC")
    )


def clean_events(events: pl.DataFrame) -> pl.DataFrame:
    """Events without the planted dirt (what a correct ingest + clean would keep)."""
    return (
        events.filter(
            pl.col("ts").is_not_null(),
            pl.col("ts").dt.year() < 2099,
            pl.col("user_id").is_not_null(),
            pl.col("event_type").is_in(EVENT_TYPES),
        )
        .unique("event_id", keep="first", maintain_order=True)
        .with_columns(day=pl.col("ts").dt.date())
    )


def read_jsonl(folder: Path) -> pl.DataFrame:
    frames = [
        pl.read_ndjson(path).with_columns(file_date=pl.lit(date.fromisoformat(path.name[:10])))
        for path in sorted(folder.glob("*.jsonl"))
        if path.stat().st_size
    ]
    return pl.concat(frames, how="diagonal_relaxed")


def read_market_prices(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted((out / "market_prices").glob("*"))])


def all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# --- layout and columns -----------------------------------------------------------------------


def test_one_file_per_source_per_day_named_by_date(small: GenerateSummary) -> None:
    out = small.out
    for source in SOURCES:
        names = sorted(p.name for p in (out / source).iterdir())
        assert names == expected_names(END, 12, SUFFIX[source]), source
    landing_files = sorted(p for s in SOURCES for p in (out / s).iterdir())
    assert sorted(small.files) == landing_files
    assert {p.name for p in (out / "_truth").iterdir()} == {
        "purchase_probability.parquet",
        "feedback_labels.parquet",
        "planted_pii.parquet",
        "truth.json",
    }
    assert small.truth_path == out / "_truth" / "purchase_probability.parquet"
    assert (small.window_start, small.window_end) == (END - timedelta(days=4), END)


def test_columns_per_source(small: GenerateSummary) -> None:
    out = small.out
    day = END.isoformat()
    header = (out / "events" / f"{day}.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == EVENT_COLUMNS
    first_items = (out / "items" / f"{(END - timedelta(days=11)).isoformat()}.jsonl").read_text()
    assert tuple(json.loads(first_items.splitlines()[0])) == ITEM_COLUMNS
    feedback = (out / "feedback" / f"{day}.jsonl").read_text().splitlines()
    assert tuple(json.loads(feedback[0])) == FEEDBACK_COLUMNS
    prices = pl.read_parquet(out / "market_prices" / f"{day}.parquet")
    assert tuple(prices.columns) == MARKET_PRICE_COLUMNS
    assert prices.schema["date"] == pl.Date
    assert prices.schema["in_stock"] == pl.Boolean
    assert prices["currency"].unique().to_list() == ["GBP"]
    assert 3 <= prices["competitor"].n_unique() <= 5
    raw = gzip.decompress((out / "market_indicators" / f"{day}.csv.gz").read_bytes())
    indicators = pl.read_csv(io.BytesIO(raw))
    assert tuple(indicators.columns) == INDICATOR_COLUMNS
    assert set(indicators["indicator"]) == {
        "fx_gbp_usd",
        "ad_cost_cpc",
        "category_index",
        "search_trend",
    }
    by_kind = indicators.group_by("indicator").agg(pl.col("dimension").null_count(), pl.len())
    nulls = dict(zip(by_kind["indicator"], by_kind["dimension"], strict=True))
    assert nulls["fx_gbp_usd"] == 1 and nulls["category_index"] == 0


def test_event_values_look_like_an_export(medium: GenerateSummary) -> None:
    events = read_events(medium.out)
    assert set(events["event_type"]) <= set(EVENT_TYPES) | set(UNKNOWN_EVENT_TYPES)
    assert events["user_id"].drop_nulls().str.contains(r"^u\d{6}$").all()
    assert events["item_id"].drop_nulls().str.contains(r"^i\d{4}$").all()
    sessions = events.filter(pl.col("session_id").is_not_null())
    users_per_session = sessions.group_by("session_id").agg(
        pl.col("user_id").drop_nulls().n_unique()
    )
    assert users_per_session["user_id"].max() == 1
    purchases = clean_events(events).filter(pl.col("event_type") == "purchase")
    assert purchases["order_id"].null_count() == 0
    quantity = purchases["quantity"].cast(pl.Int64, strict=False)
    assert (quantity.drop_nulls() >= 1).all()
    price = purchases["price"].cast(pl.Float64)
    assert (price.drop_nulls().round(2) == price.drop_nulls()).all()
    views = events.filter(pl.col("event_type") == "view")
    assert views["order_id"].null_count() == views.height
    # time-zone spellings: mostly +00:00, some whole files in Z, about 1 % of rows at +01:00
    offsets = events["event_time"].str.extract(r"(Z|[+-]\d\d:\d\d)$").value_counts()
    share = dict(zip(offsets[:, 0], offsets["count"] / events.height, strict=True))
    assert share["+00:00"] > 0.6
    assert 0.003 < share["+01:00"] < 0.03
    assert "Z" in share


def test_items_first_file_full_then_only_new_or_changed(medium: GenerateSummary) -> None:
    items = read_jsonl(medium.out / "items")
    first_day = END - timedelta(days=MEDIUM["days"] - 1)
    first = items.filter(pl.col("file_date") == first_day)
    later = items.filter(pl.col("file_date") > first_day)
    assert later.height / (MEDIUM["days"] - 1) < first.height / 2
    assert items["item_id"].n_unique() == MEDIUM["items"]
    assert items["category"].n_unique() == 12
    created = items.with_columns(
        created=pl.col("created_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%z").dt.date()
    )
    launched_later = created.filter(pl.col("created") >= first_day + timedelta(days=1))
    assert launched_later["item_id"].n_unique() > 0
    first_seen = created.group_by("item_id").agg(pl.col("file_date").min(), pl.col("created").min())
    assert (first_seen["file_date"] == first_seen["created"].clip(lower_bound=first_day)).all()
    # an item never appears in events before it is launched
    events = clean_events(read_events(medium.out))
    launch = first_seen.select("item_id", launch=pl.col("created"))
    early = events.join(launch, on="item_id").filter(pl.col("day") <= pl.col("launch"))
    assert early.filter(pl.col("event_type") != "return").height == 0


def test_invalid_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eval_days"):
        generate_landing(tmp_path, users=10, items=20, days=5, eval_days=5, end_date=END)
    with pytest.raises(ValueError, match="items"):
        generate_landing(tmp_path, users=10, items=5, days=5, eval_days=2, end_date=END)
    with pytest.raises(ValueError, match="activity=0"):
        generate_landing(tmp_path, users=10, items=20, days=5, end_date=END, activity=0)


def test_activity_multiplies_events_and_the_truth_follows(tmp_path: Path) -> None:
    """More activity: more events per user, and the true probabilities still match buyers."""
    kwargs = {"users": 1500, "items": 40, "days": 30, "end_date": END}
    base = generate_landing(tmp_path / "base", **kwargs)
    busy = generate_landing(tmp_path / "busy", **kwargs, activity=3.5)
    assert busy.rows["events"] > 3 * base.rows["events"]
    meta = json.loads((busy.out / "_truth" / "truth.json").read_text())
    assert meta["activity"] == 3.5
    truth = pl.read_parquet(busy.truth_path)
    events = clean_events(read_events(busy.out))
    buyers = events.filter(pl.col("event_type") == "purchase", pl.col("day") >= busy.window_start)[
        "user_id"
    ].unique()
    p = truth["p_purchase"].to_numpy()
    bought = truth["user_id"].is_in(buyers.implode()).to_numpy()
    sd = float(np.sqrt((p * (1 - p)).sum()))
    assert abs(bought.sum() - p.sum()) < 4 * sd + 0.005 * p.sum()
    assert p.mean() > pl.read_parquet(base.truth_path)["p_purchase"].mean()


def test_progress_is_reported_once_per_day(tmp_path: Path) -> None:
    messages: list[str] = []
    generate_landing(
        tmp_path, users=50, items=15, days=4, eval_days=2, end_date=END, progress=messages.append
    )
    assert len(messages) == 4
    assert messages[-1].startswith(END.isoformat())


# --- determinism (hypothesis) -----------------------------------------------------------------


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_same_seed_gives_identical_bytes_other_seed_differs(seed: int) -> None:
    kwargs = {"users": 120, "items": 20, "days": 5, "eval_days": 2, "end_date": END}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        first = generate_landing(Path(a), seed=seed, **kwargs)
        second = generate_landing(Path(b), seed=seed, **kwargs)
        assert all_bytes(Path(a)) == all_bytes(Path(b))
        assert first.rows == second.rows and first.dirt == second.dirt
    with tempfile.TemporaryDirectory() as c:
        generate_landing(Path(c), seed=seed + 1, **kwargs)
        other = all_bytes(Path(c))
        name = f"events/{END.isoformat()}.csv"
        with tempfile.TemporaryDirectory() as d:
            generate_landing(Path(d), seed=seed, **kwargs)
            assert all_bytes(Path(d))[name] != other[name]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    days=st.integers(min_value=2, max_value=6),
    eval_days=st.integers(min_value=1, max_value=5),
    end=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
)
def test_files_only_for_dates_within_the_period(days: int, eval_days: int, end: date) -> None:
    eval_days = min(eval_days, days - 1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        summary = generate_landing(
            out, users=40, items=14, days=days, eval_days=eval_days, end_date=end
        )
        for source in SOURCES:
            names = sorted(p.name for p in (out / source).iterdir())
            assert names == expected_names(end, days, SUFFIX[source])
        assert len(summary.files) == days * len(SOURCES)
        truth = json.loads((out / "_truth" / "truth.json").read_text())
        assert truth["window_end"] == end.isoformat()
        assert truth["window_start"] == (end - timedelta(days=eval_days - 1)).isoformat()


# --- dirt -------------------------------------------------------------------------------------


def test_dirt_is_present_at_documented_rates(medium: GenerateSummary) -> None:
    events = read_events(medium.out)
    n = events.height
    dirt = medium.dirt
    assert dirt["duplicate_event"] == n - events["event_id"].n_unique()
    assert dirt["bad_quantity"] == (events["quantity"] == "two").sum()
    assert dirt["negative_price"] == (events["price"].cast(pl.Float64) < 0).sum()
    purchases = events.filter(pl.col("event_type") == "purchase")
    assert dirt["missing_user_id"] == purchases["user_id"].null_count()
    assert dirt["unknown_event_type"] == events["event_type"].is_in(UNKNOWN_EVENT_TYPES).sum()
    assert dirt["future_event_time"] == (events["ts"].dt.year() == 2099).sum()
    assert dirt["bad_event_time"] == events["ts"].null_count()
    late = events.filter(pl.col("ts").dt.date() < pl.col("file_date")).unique("event_id")
    assert dirt["late_event"] == late.height
    tolerance = {"future_event_time": 3.0}
    for kind in (
        "duplicate_event",
        "bad_event_time",
        "future_event_time",
        "unknown_event_type",
        "late_event",
    ):
        expected = DIRT_RATES[kind] * n
        assert abs(dirt[kind] - expected) < tolerance.get(kind, 0.35) * expected + 4, kind
    for kind in ("bad_quantity", "negative_price", "missing_user_id"):
        assert 0.5 * DIRT_RATES[kind] * n < dirt[kind] < 1.6 * DIRT_RATES[kind] * n, kind
    feedback = read_jsonl(medium.out / "feedback")
    assert dirt["feedback_bad_rating"] == (feedback["rating"] == 7).sum() > 0
    empty = feedback.filter(pl.col("text") == "", pl.col("rating").is_null())
    assert dirt["feedback_empty"] == empty.height > 0


def test_late_events_sit_at_the_end_of_the_next_days_file(medium: GenerateSummary) -> None:
    events = read_events(medium.out)
    late = events.filter(pl.col("ts").dt.date() < pl.col("file_date"))
    assert (late["ts"].dt.date() == late["file_date"] - timedelta(days=1)).all()
    sizes = events.group_by("file_date").agg(n=pl.len())
    tail = late.join(sizes, on="file_date").select(pl.col("file_row") / pl.col("n"))
    assert tail.to_series().min() > 0.9


# --- planted signals --------------------------------------------------------------------------


def test_recent_buyers_buy_more_in_the_window(medium: GenerateSummary) -> None:
    events = clean_events(read_events(medium.out))
    start = medium.window_start
    buys = events.filter(pl.col("event_type") == "purchase")
    recent = set(
        buys.filter(pl.col("day").is_between(start - timedelta(days=7), start, closed="left"))[
            "user_id"
        ]
    )
    in_window = set(buys.filter(pl.col("day") >= start)["user_id"])
    all_users = [f"u{k:06d}" for k in range(MEDIUM["users"])]
    recent_rate = np.mean([u in in_window for u in all_users if u in recent])
    other_rate = np.mean([u in in_window for u in all_users if u not in recent])
    assert len(recent) > 100
    assert recent_rate > 2.5 * other_rate


def test_truth_is_one_probability_per_user_and_calibrated(medium: GenerateSummary) -> None:
    truth = pl.read_parquet(medium.truth_path)
    assert truth.columns == ["user_id", "p_purchase"]
    assert truth.height == MEDIUM["users"] == truth["user_id"].n_unique()
    assert ((truth["p_purchase"] > 0) & (truth["p_purchase"] < 1)).all()
    events = clean_events(read_events(medium.out))
    buyers = events.filter(
        pl.col("event_type") == "purchase", pl.col("day") >= medium.window_start
    )["user_id"].unique()
    p = truth["p_purchase"].to_numpy()
    bought = truth["user_id"].is_in(buyers.implode()).to_numpy()
    # the realised count of window buyers matches the sum of true probabilities
    sd = float(np.sqrt((p * (1 - p)).sum()))
    assert abs(bought.sum() - p.sum()) < 4 * sd + 0.005 * p.sum()
    # and within deciles of p as well
    order = np.argsort(p)
    for chunk in np.array_split(order, 5):
        sd_chunk = float(np.sqrt((p[chunk] * (1 - p[chunk])).sum()))
        assert abs(bought[chunk].sum() - p[chunk].sum()) < 4 * sd_chunk + 3
    meta = json.loads((medium.out / "_truth" / "truth.json").read_text())
    assert meta["seed"] == MEDIUM["seed"] and meta["users"] == MEDIUM["users"]


def test_purchase_given_visit_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    c, lam, f = 0.2, 1.5, 0.8
    n = 200_000
    views = 1 + rng.poisson(lam, n)
    bought = rng.binomial(views, c * f) > 0
    exact = purchase_given_visit(np.array([c]), np.array([lam]), np.array([f]))[0]
    assert abs(bought.mean() - exact) < 0.005


def test_views_concentrate_in_preferred_categories(medium: GenerateSummary) -> None:
    events = clean_events(read_events(medium.out))
    items = read_jsonl(medium.out / "items").unique("item_id").select("item_id", "category")
    views = events.filter(pl.col("event_type") == "view").join(items, on="item_id")
    per_user = (
        views.group_by("user_id", "category")
        .len()
        .with_columns(
            share=pl.col("len") / pl.col("len").sum().over("user_id"),
            total=pl.col("len").sum().over("user_id"),
            rank=pl.col("len").rank("ordinal", descending=True).over("user_id"),
        )
        .filter(pl.col("total") >= 15, pl.col("rank") <= 3)
        .group_by("user_id")
        .agg(pl.col("share").sum())
    )
    assert per_user.height > 50
    assert per_user["share"].mean() > 0.75  # 3 of 12 categories at random would be ~0.35


def test_items_priced_above_competitors_sell_less_per_view(medium: GenerateSummary) -> None:
    out = medium.out
    first_day = END - timedelta(days=MEDIUM["days"] - 1)
    days = pl.DataFrame({"day": pl.date_range(first_day, END, eager=True)})
    item_prices = read_jsonl(out / "items").select(
        "item_id", day=pl.col("file_date"), our_price=pl.col("price")
    )
    daily_price = (
        days.join(item_prices.select("item_id").unique(), how="cross")
        .join(item_prices, on=["item_id", "day"], how="left")
        .sort("item_id", "day")
        .with_columns(pl.col("our_price").forward_fill().over("item_id"))
    )
    median = (
        read_market_prices(out)
        .group_by("item_id", day=pl.col("date"))
        .agg(competitor_median=pl.col("price").median())
    )
    position = daily_price.join(median, on=["item_id", "day"]).with_columns(
        above=pl.col("our_price") > pl.col("competitor_median")
    )
    assert 0.1 < position["above"].mean() < 0.6
    # prices move: many items are above competitors on some days and not on others
    switching = position.group_by("item_id").agg(pl.col("above").n_unique() == 2)
    assert switching["above"].mean() > 0.3
    events = clean_events(read_events(out)).filter(pl.col("event_type").is_in(["view", "purchase"]))
    funnel = (
        events.join(position, on=["item_id", "day"])
        .group_by("above")
        .agg(
            views=(pl.col("event_type") == "view").sum(),
            purchases=(pl.col("event_type") == "purchase").sum(),
        )
        .with_columns(rate=pl.col("purchases") / pl.col("views"))
        .sort("above")
    )
    below_rate, above_rate = funnel["rate"].to_list()
    assert funnel["purchases"].min() > 50
    assert above_rate < 0.75 * below_rate


def test_review_text_follows_rating_and_support_has_topics(medium: GenerateSummary) -> None:
    feedback = read_jsonl(medium.out / "feedback")
    labels = pl.read_parquet(medium.out / "_truth" / "feedback_labels.parquet")
    assert labels.height == feedback.height
    assert set(feedback["channel"]) == {"review", "support", "survey", "app_store"}
    planted = pl.read_parquet(medium.out / "_truth" / "planted_pii.parquet")
    reviews = feedback.filter(
        pl.col("channel") == "review", pl.col("rating").is_between(1, 5), pl.col("text") != ""
    ).join(planted, on="feedback_id", how="anti")  # a planted e-mail ends the text instead
    sentiment = (
        pl.when(pl.col("rating") >= 4).then(2).when(pl.col("rating") <= 2).then(0).otherwise(1)
    )
    for group, closers in enumerate(REVIEW_CLOSERS):
        matches = reviews.filter(sentiment == group).select(
            pl.any_horizontal([pl.col("text").str.ends_with(c) for c in closers])
        )
        assert matches.height > 10 and matches.to_series().all(), group
    assert reviews["text"].n_unique() > 0.5 * reviews.height
    support = feedback.filter(pl.col("channel") == "support").join(labels, on="feedback_id")
    assert support["rating"].null_count() == support.height
    assert support["topic"].null_count() == 0
    assert support["topic"].n_unique() == 6
    texts = support.filter(pl.col("text") != "")
    flagged = texts["text"].str.contains_any(list(URGENCY_PHRASES + PAYMENT_URGENCY_PHRASES))
    urgent = texts["urgent"]
    assert (flagged == urgent).all()
    assert 0.15 < urgent.mean() < 0.5
    charged_twice = support.filter(pl.col("text").str.contains("charged"))
    assert set(charged_twice["topic"]) <= {"payment"}


def test_some_texts_carry_contact_details_that_the_truth_lists(medium: GenerateSummary) -> None:
    feedback = read_jsonl(medium.out / "feedback")
    planted = pl.read_parquet(medium.out / "_truth" / "planted_pii.parquet")
    assert set(planted["kind"]) == {"email", "phone", "card"}
    joined = planted.join(feedback, on="feedback_id")
    assert joined.height == planted.height
    assert joined.select(pl.col("text").str.contains(pl.col("value"), literal=True).all()).item()
    support_share = joined.filter(pl.col("channel") == "support").height / planted.height
    assert support_share > 0.5  # people give their details mostly to support
    assert (medium.out / "knowledge_base" / "faq.md").read_text().startswith("# ")
