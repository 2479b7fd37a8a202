"""Clean transforms on tiny literal frames: types, ids, duplicates, corrections, future rows."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.schemas.landing import CONTRACTS
from nightowl.schemas.sources import DEFAULT_EVENT_TYPE_MAP
from nightowl.tasks.ingest.clean import (
    REASON,
    SPECS,
    accepted_clean_rows,
    cleaned_events,
    cleaned_feedback,
    cleaned_market_prices,
    cleaned_rows,
    day_slices,
    future_cutoff,
    ids_given,
    keys_sharing_a_hash,
    later_duplicates,
    normalised_event_types,
    raw_counts,
    rejected_clean_rows,
    summed_counts,
    with_row_ids,
)

CUTOFF = future_cutoff(date(2026, 11, 27), 24)


def _raw(source: str, rows: list[dict]) -> pl.LazyFrame:
    schema = CONTRACTS[source].schema
    frame = pl.DataFrame([{c: r.get(c) for c in schema.names()} for r in rows], schema=schema)
    return frame.with_columns(
        pl.lit("2026-11-27").alias("_run"),
        pl.lit(0, pl.UInt32).alias("_entry"),
        pl.lit("f.csv").alias("source_file"),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("source_row"),
    ).lazy()


def _event(i: str | None, t: datetime, **kw) -> dict:
    return {"event_id": i, "user_id": "u1", "event_time": t, "event_type": "view", **kw}


T = datetime(2026, 11, 27, 9, tzinfo=UTC)


def test_event_types_are_normalised_and_synonyms_mapped():
    frame = pl.DataFrame({"t": [" View ", "Add To Cart", "add-to-cart", "PageView", "wishlist"]})
    out = frame.select(normalised_event_types(pl.col("t"), DEFAULT_EVENT_TYPE_MAP))["t"]
    assert out.to_list() == ["view", "add_to_cart", "add_to_cart", "view", "wishlist"]


def test_future_cutoff_is_end_of_run_date_plus_tolerance():
    assert future_cutoff(date(2026, 11, 27), 6) == datetime(2026, 11, 28, 6, tzinfo=UTC)


def test_duplicate_events_are_rejected_keeping_the_first():
    raw = _raw("events", [_event("a", T), _event("a", T), _event("b", T)])
    verdicts = cleaned_events(raw, DEFAULT_EVENT_TYPE_MAP, CUTOFF).collect()
    assert verdicts[REASON].to_list() == [
        None,
        "duplicate of an earlier row with the same event_id",
        None,
    ]
    bad = rejected_clean_rows(verdicts.lazy(), SPECS["events"]).collect()
    assert bad.select("row", "column", "raw_value").row(0) == (2, "event_id", "a")


def test_events_without_id_get_a_stable_content_hash_id():
    raw = _raw("events", [_event(None, T), _event(None, T), _event(None, T, item_id="i2")])
    verdicts = cleaned_events(raw, DEFAULT_EVENT_TYPE_MAP, CUTOFF).collect()
    ids = verdicts["event_id"].to_list()
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("rh-")
    assert verdicts[REASON].null_count() == 2
    again = cleaned_events(raw, DEFAULT_EVENT_TYPE_MAP, CUTOFF).collect()["event_id"].to_list()
    assert again == ids


def test_future_events_are_rejected_and_dates_come_from_utc():
    late_evening = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    raw = _raw("events", [_event("a", late_evening), _event("b", datetime(2099, 1, 1, tzinfo=UTC))])
    verdicts = cleaned_events(raw, DEFAULT_EVENT_TYPE_MAP, CUTOFF).collect()
    assert verdicts["dt"].to_list() == [date(2026, 11, 27), date(2099, 1, 1)]
    assert verdicts[REASON][0] is None and "in the future" in verdicts[REASON][1]


def test_quantity_defaults_to_one():
    raw = _raw("events", [_event("a", T, event_type="purchase")])
    good = accepted_clean_rows(cleaned_events(raw, {}, CUTOFF), SPECS["events"]).collect()
    assert good["quantity"].to_list() == [1]


def test_a_later_market_price_supersedes_an_earlier_one():
    d = date(2026, 11, 27)
    raw = _raw("market_prices", [
        {"date": d, "item_id": "i1", "competitor": "acme", "price": 10.0},
        {"date": d, "item_id": "i1", "competitor": "acme", "price": 11.0},
        {"date": d, "item_id": "i1", "competitor": "zeta", "price": 9.0},
    ])  # fmt: skip
    good = accepted_clean_rows(
        cleaned_rows(raw, SPECS["market_prices"], CUTOFF), SPECS["market_prices"]
    )
    assert good.collect().select("competitor", "price").rows() == [("acme", 11.0), ("zeta", 9.0)]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 3)), max_size=30))
def test_clean_events_have_unique_ids_and_rows_reconcile(rows):
    raw = _raw("events", [_event(i, T.replace(hour=h)) for i, h in rows])
    verdicts = cleaned_events(raw, {}, CUTOFF)
    good = accepted_clean_rows(verdicts, SPECS["events"]).collect()
    bad = rejected_clean_rows(verdicts, SPECS["events"]).collect()
    assert good["event_id"].is_unique().all()
    assert good.height + bad.height == len(rows)
    assert set(good["event_id"]) == {i for i, _ in rows}


def _quote(item: str, competitor: str, price: float, day: date = date(2026, 11, 26)) -> dict:
    return {"date": day, "item_id": item, "competitor": competitor, "price": price}


def test_competitor_price_outliers_are_quarantined_with_the_median_they_miss():
    rows = [
        _quote("i1", "a", 10.0),
        _quote("i1", "b", 11.0),
        _quote("i1", "c", 12.0),
        _quote("i1", "d", 99.0),  # 9x the median
        _quote("i2", "a", 10.0),
        _quote("i2", "b", 1.0),  # only two quotes: nothing to judge against
        _quote("i3", "a", 30.0),
        _quote("i3", "b", 20.0),
        _quote("i3", "c", 7.0),  # 0.35x the median: not below 1/3
    ]
    spec = SPECS["market_prices"]
    verdicts = cleaned_market_prices(_raw("market_prices", rows), CUTOFF, 3.0)
    bad = rejected_clean_rows(verdicts, spec).collect()
    assert bad.select("row", "column", "raw_value").rows() == [(4, "price", "99.0")]
    assert bad["reason"][0].startswith("price: 99.0 is 8.61x the median competitor price 11.5")
    assert accepted_clean_rows(verdicts, spec).collect().height == len(rows) - 1


def test_a_corrected_outlier_is_superseded_not_quarantined():
    rows = [_quote("i1", c, p) for c, p in [("a", 10.0), ("b", 11.0), ("c", 120.0)]]
    rows.append(_quote("i1", "c", 12.0))  # the same key again: a correction
    verdicts = cleaned_market_prices(_raw("market_prices", rows), CUTOFF, 3.0)
    spec = SPECS["market_prices"]
    assert rejected_clean_rows(verdicts, spec).collect().height == 0
    assert sorted(accepted_clean_rows(verdicts, spec).collect()["price"]) == [10.0, 11.0, 12.0]


# ---- feedback text: odd input is cleaned and kept (scored later), never a crash --------------
def _feedback(text: str | None, rating: int | None = 4, title: str | None = None) -> dict:
    return {"feedback_id": "f1", "text": text, "rating": rating, "title": title,
            "created_at": T}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "clean_text", "pii"),
    [
        ("", "", []),  # no text but a rating: kept, scored from the rating
        ("😍😍😍", "😍😍😍", []),  # only emojis
        ("<p>Loved it!<br/>Really &amp; truly</p>", "Loved it! Really & truly", []),
        ("Très bon produit, 非常好, sehr gut 👍", "Très bon produit, 非常好, sehr gut 👍", []),
        ("Mail me: ana@example.com", "Mail me: [EMAIL]", ["email"]),
        ("<b>call</b> +44 20 7946 0958", "call [PHONE]", ["phone"]),
    ],
)
def test_feedback_text_is_plain_and_redacted(text, clean_text, pii):
    rows = cleaned_feedback(_raw("feedback", [_feedback(text)]), CUTOFF).collect()
    kept = accepted_clean_rows(rows.lazy(), SPECS["feedback"]).collect()
    assert kept.height == 1 and kept["text"][0] == clean_text
    assert kept["pii"][0].to_list() == pii
    assert kept["text_chars"][0] == len(clean_text.replace("[EMAIL]", "ana@example.com")
                                        .replace("[PHONE]", "+44 20 7946 0958"))  # fmt: skip


def test_very_long_feedback_is_cut_and_its_length_kept():
    text = "word " * 3000
    rows = cleaned_feedback(_raw("feedback", [_feedback(text)]), CUTOFF, max_chars=500).collect()
    kept = accepted_clean_rows(rows.lazy(), SPECS["feedback"]).collect()
    assert kept["text"].str.len_chars()[0] == 500
    assert kept["text_chars"][0] == len(text.strip())  # what was cut is counted


def test_a_card_number_at_the_cut_is_redacted_whole():
    text = "x" * 490 + " card 4111 1111 1111 1111 thanks"
    rows = cleaned_feedback(_raw("feedback", [_feedback(text)]), CUTOFF, max_chars=500).collect()
    kept = accepted_clean_rows(rows.lazy(), SPECS["feedback"]).collect()
    assert "4111" not in kept["text"][0] and kept["pii"][0].to_list() == ["card"]


def test_pii_in_a_title_is_redacted_too():
    rows = cleaned_feedback(
        _raw("feedback", [_feedback("fine", title="From bob@example.org")]), CUTOFF
    ).collect()
    kept = accepted_clean_rows(rows.lazy(), SPECS["feedback"]).collect()
    assert kept["title"][0] == "From [EMAIL]" and kept["pii"][0].to_list() == ["email"]


def test_ids_come_from_the_text_as_written_not_the_redacted_one():
    rows = [
        {**_feedback("Call me on 07700 900123"), "feedback_id": None},
        {**_feedback("Call me on 07700 900456"), "feedback_id": None},
    ]
    short = cleaned_feedback(_raw("feedback", rows), CUTOFF, max_chars=100).collect()
    kept = accepted_clean_rows(short.lazy(), SPECS["feedback"]).collect()
    assert kept.height == 2 and kept["feedback_id"].n_unique() == 2  # not duplicates
    assert kept["text"].to_list() == ["Call me on [PHONE]"] * 2
    longer = cleaned_feedback(_raw("feedback", rows), CUTOFF, max_chars=5000).collect()
    assert longer["feedback_id"].to_list() == short["feedback_id"].to_list()


def test_text_that_is_only_html_and_no_rating_is_quarantined_with_a_reason():
    rows = cleaned_feedback(_raw("feedback", [_feedback("<br/><br/>", rating=None)]), CUTOFF)
    bad = rejected_clean_rows(rows, SPECS["feedback"]).collect()
    assert bad.height == 1 and bad["column"][0] == "text"
    assert "nothing left once the HTML is removed" in bad["reason"][0]


@given(st.lists(st.integers(0, 9), max_size=20), st.integers(1, 12))
def test_day_slices_keep_every_day_in_order_within_the_row_budget(counts, max_rows):
    days = [f"2026-11-{d:02d}" for d in range(1, len(counts) + 1)]
    rows = dict(zip(days, counts, strict=True))
    slices = day_slices(days, rows, max_rows)
    assert [d for s in slices for d in s] == days
    for s in slices:
        assert len(s) == 1 or sum(rows[d] for d in s) <= max_rows
    for s, after in itertools.pairwise(slices):  # greedy: the next day did not fit
        assert sum(rows[d] for d in s) + rows[after[0]] > max_rows


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=25), st.integers(1, 4))
def test_later_duplicates_are_the_rows_whose_id_came_earlier(ids, bucket_rows):
    """Whatever the hash buckets, the duplicates are exactly the repeats, in arrival order."""
    raw = _raw("events", [_event(i, T, user_id=f"u{n % 2}") for n, i in enumerate(ids)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("nightowl.tasks.ingest.clean._HASH_BUCKET_ROWS", bucket_rows)
        found = later_duplicates(raw, SPECS["events"]).to_list()
    filled = with_row_ids(raw, SPECS["events"]).collect()["event_id"]
    expected = [n + 1 for n in range(len(ids)) if filled[n] in filled[:n].to_list()]
    assert sorted(found) == expected  # arrival keys of entry 0 are the row numbers


def test_corrections_are_only_sliced_by_day_when_their_key_holds_the_day():
    """A "last" key without the partition date could supersede across two slices of days."""
    for spec in SPECS.values():
        partition = CONTRACTS[spec.table].partition_column
        if spec.keep == "last" and partition is not None:
            assert partition in spec.key, spec.table


def test_raw_counts_give_the_rows_of_each_day_and_the_rows_without_an_id():
    late = datetime(2026, 11, 26, 23, 59, tzinfo=UTC)
    raw = _raw("events", [_event("a", T), _event(None, T), _event(None, late)])
    counts = raw_counts(raw, SPECS["events"])
    assert counts.per_day == {"2026-11-27": 2, "2026-11-26": 1}
    assert counts.missing_ids == 2
    prices = [{"date": date(2026, 11, 27), "item_id": "i", "competitor": "c", "price": 1.0}]
    assert raw_counts(_raw("market_prices", prices), SPECS["market_prices"]).missing_ids == 0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", None]), st.integers(24, 27)), max_size=20),
    st.integers(1, 5),
)
def test_counts_of_batches_summed_are_the_counts_of_all_rows(rows, batch):
    """Ingest counts each batch it writes; cleaning sums them instead of reading the rows."""
    events = [_event(i, datetime(2026, 11, day, 9, tzinfo=UTC)) for i, day in rows]
    whole = raw_counts(_raw("events", events), SPECS["events"])
    batches = [events[n : n + batch] for n in range(0, len(events), batch)]
    summed = summed_counts([raw_counts(_raw("events", b), SPECS["events"]) for b in batches])
    assert summed.per_day == dict(sorted(whole.per_day.items()))
    assert summed.missing_ids == whole.missing_ids


def test_ids_are_only_left_unfilled_when_every_row_has_one():
    given_all = raw_counts(_raw("events", [_event("a", T)]), SPECS["events"])
    one_missing = raw_counts(_raw("events", [_event("a", T), _event(None, T)]), SPECS["events"])
    assert ids_given(SPECS["events"], given_all).id_column is None
    assert ids_given(SPECS["events"], one_missing) == SPECS["events"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=25))
def test_verdicts_are_the_same_whether_or_not_the_ids_are_known_to_be_given(ids):
    """Skipping the content hash (every row has an id) changes no row and no verdict."""
    raw = _raw("events", [_event(i, T, user_id=f"u{n % 3}") for n, i in enumerate(ids)])
    spec = ids_given(SPECS["events"], raw_counts(raw, SPECS["events"]))
    duplicates = later_duplicates(raw, spec)
    fast = cleaned_events(raw, {}, CUTOFF, duplicates, spec).collect()
    assert fast.equals(cleaned_events(raw, {}, CUTOFF).collect())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=40))
def test_keys_sharing_a_hash_are_found_by_sorting(hashes):
    frame = pl.DataFrame(
        {"k": list(range(len(hashes))), "h": hashes}, schema={"k": pl.UInt64, "h": pl.UInt64}
    )
    found = keys_sharing_a_hash(frame).sort().to_list()
    assert found == frame.filter(pl.col("h").is_duplicated())["k"].to_list()
