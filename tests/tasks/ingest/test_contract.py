"""Ingest transforms on tiny literal frames: mapping, typing, validation, business rules."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.schemas.landing import CONTRACTS, EVENTS, FEEDBACK
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest.contract import (
    BAD,
    MappingError,
    accepted_rows,
    column_plan,
    mapped_rows,
    quarantined_rows,
    validated_rows,
)


def _check(frame: pl.DataFrame, source: str = "events", **cfg) -> pl.DataFrame:
    """Validated rows plus a REASON column (null for accepted rows), in row order."""
    config = SourceConfig(**cfg)
    contract = CONTRACTS[source]
    plan = column_plan(frame.columns, contract, config)
    checked = validated_rows(mapped_rows(frame.lazy(), plan, contract).collect(), contract, config)
    reasons = quarantined_rows(checked, contract, config, "f.csv").select("row", "reason")
    return checked.join(reasons, left_on="_row", right_on="row", how="left", maintain_order="left")


def _quarantined(out: pl.DataFrame, source: str = "events", **cfg) -> pl.DataFrame:
    return quarantined_rows(out, CONTRACTS[source], SourceConfig(**cfg), "f.csv")


REASON = "reason"


def _events(**cols) -> pl.DataFrame:
    base = {"user_id": ["u1"], "event_time": ["2026-11-27T10:00:00+00:00"], "event_type": ["view"]}
    n = max(len(v) for v in cols.values()) if cols else 1
    base = {k: v * n for k, v in base.items()}
    return pl.DataFrame(base | cols, schema_overrides=dict.fromkeys(base | cols, pl.String))


def test_plan_maps_renames_constants_and_reports_unknown_columns():
    cfg = SourceConfig(columns={"Customer ID": "user_id", "ts": "event_time"},
                       constants={"event_type": "purchase"})  # fmt: skip
    plan = column_plan(["Customer ID", "ts", "Country"], EVENTS, cfg)
    assert plan.renames == {"Customer ID": "user_id", "ts": "event_time"}
    assert plan.constants == {"event_type": "purchase"}
    assert plan.unknown == ["Country"]


def test_plan_names_the_missing_required_column():
    with pytest.raises(
        MappingError, match=r"required column 'event_time'.*columns found: 'user_id'"
    ):
        column_plan(["user_id", "event_type"], EVENTS, SourceConfig())


def test_plan_rejects_a_mapping_that_names_a_column_the_file_lacks():
    cfg = SourceConfig(columns={"Customer ID": "user_id"})
    with pytest.raises(MappingError, match="names 'Customer ID', which the file does not have"):
        column_plan(["user_id", "event_time", "event_type"], EVENTS, cfg)


def test_headers_match_contract_columns_whatever_their_case_and_spaces():
    header = ["event_id", "user_id", "Event_Time", " event_type", "Order_ID", "Quantity", " price"]
    plan = column_plan(header, EVENTS, SourceConfig())
    assert plan.renames == {
        "event_id": "event_id", "user_id": "user_id", "Event_Time": "event_time",
        " event_type": "event_type", "Order_ID": "order_id", "Quantity": "quantity",
        " price": "price",
    }  # fmt: skip
    assert plan.unknown == [] and plan.suggestions == []
    for spelling in ("Order ID", "order-id", "ORDER  ID "):
        plan = column_plan(
            ["user_id", "event_time", "event_type", spelling], EVENTS, SourceConfig()
        )
        assert plan.renames[spelling] == "order_id"


def test_two_headers_for_one_contract_column_are_refused_naming_both():
    with pytest.raises(
        MappingError, match=r"'Price', 'price ' all read as the events column 'price'"
    ):
        column_plan(
            ["user_id", "event_time", "event_type", "Price", "price "], EVENTS, SourceConfig()
        )
    cfg = SourceConfig(columns={"a": "user_id", "b": "user_id"})
    with pytest.raises(MappingError, match=r"'a', 'b' are mapped onto the events column 'user_id'"):
        column_plan(["a", "b", "event_time", "event_type"], EVENTS, cfg)


def test_a_mapping_wins_over_a_matching_name_and_matches_the_header_loosely():
    cfg = SourceConfig(columns={"Customer ID": "user_id"})
    plan = column_plan([" customer id", "User_ID", "event_time", "event_type"], EVENTS, cfg)
    assert plan.renames[" customer id"] == "user_id" and plan.unknown == ["User_ID"]
    assert plan.suggestions == ["column 'User_ID' is not used: user_id is read from ' customer id'"]
    with pytest.raises(
        MappingError, match="matches the header columns 'customer id', 'Customer_ID'"
    ):
        column_plan(["customer id", "Customer_ID", "event_time", "event_type"], EVENTS, cfg)
    twice = SourceConfig(columns={"Customer ID": "user_id", "CUSTOMER ID": "session_id"})
    with pytest.raises(MappingError, match=r"'Customer ID' twice \(as 'Customer ID' and 'CUSTOMER"):
        column_plan(["Customer ID", "event_time", "event_type"], EVENTS, twice)


def test_columns_that_look_like_contract_columns_are_suggested():
    header = ["userid", "event_time", "event_type", "pric", "Country"]
    # Guests are rows without a user: a file without the column is a forgotten mapping.
    with pytest.raises(MappingError, match=r"'user_id' is missing.*did you mean user_id\?"):
        column_plan(header, EVENTS, SourceConfig())
    plan = column_plan(header, EVENTS, SourceConfig(missing_user="guest"))
    assert plan.unknown == ["userid", "pric", "Country"]
    where = "map it under [sources.events.columns]"
    assert plan.suggestions == [
        f"column 'userid' is not mapped; did you mean user_id? {where}",
        f"column 'pric' is not mapped; did you mean price? {where}",
    ]


def test_the_online_retail_header_maps_as_before_with_nothing_suggested():
    header = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price",
              "Customer ID", "Country"]  # fmt: skip
    events = SourceConfig(
        columns={"Invoice": "order_id", "StockCode": "item_id", "InvoiceDate": "event_time",
                 "Quantity": "quantity", "Price": "price", "Customer ID": "user_id"},
        constants={"event_type": "purchase"},
    )  # fmt: skip
    plan = column_plan(header, EVENTS, events)
    assert plan.unknown == ["Description", "Country"] and plan.suggestions == []
    items = SourceConfig(columns={"StockCode": "item_id", "Description": "title", "Price": "price"})
    plan = column_plan(header, CONTRACTS["items"], items)
    assert set(plan.renames.values()) == {"item_id", "title", "price"} and plan.suggestions == []


def test_plan_rejects_a_mapping_onto_a_column_outside_the_contract():
    cfg = SourceConfig(columns={"x": "colour"})
    with pytest.raises(MappingError, match="'colour', which are not events columns"):
        column_plan(["x", "user_id", "event_time", "event_type"], EVENTS, cfg)


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2026-11-27T10:00:00+00:00", "UTC", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T10:00:00Z", "UTC", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27 10:00:00.250", "UTC", datetime(2026, 11, 27, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-27T12:00:00+02:00", "UTC", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        # Naive timestamps are read in the source's zone: London is UTC+0 in winter, +1 in summer.
        ("2026-07-01 11:00:00", "Europe/London", datetime(2026, 7, 1, 10, tzinfo=UTC)),
        ("2026-11-27", "UTC", datetime(2026, 11, 27, tzinfo=UTC)),
    ],
)
def test_timestamps_in_common_spellings_become_utc(text, zone, expected):
    out = _check(_events(event_time=[text]), timezone=zone)
    assert out[REASON][0] is None
    assert out["event_time"][0] == expected


def test_timestamp_format_from_config():
    out = _check(_events(event_time=["27/11/2026 10:00"]), timestamp_format="%d/%m/%Y %H:%M")
    assert out["event_time"][0] == datetime(2026, 11, 27, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cols", "column", "reason"),
    [
        ({"event_time": ["yesterday"]}, "event_time", "event_time: expected a timestamp"),
        ({"quantity": ["two"]}, "quantity", "quantity: expected a whole number"),
        ({"quantity": ["1.5"]}, "quantity", "quantity: expected a whole number"),
        ({"quantity": ["0"]}, "quantity", "quantity: must be ≥ 1"),
        ({"price": ["-3.50"]}, "price", "price: must be ≥ 0"),
        ({"price": ["abc"]}, "price", "price: expected a number"),
        ({"price": ["inf"]}, "price", "price: expected a number"),
        ({"user_id": [None]}, "user_id", "user_id: required value is missing"),
        ({"user_id": ["caf\ufffd"]}, "user_id", "bytes that are not UTF-8"),
    ],
)
def test_bad_values_are_quarantined_with_column_value_and_reason(cols, column, reason):
    out = _check(_events(**cols), missing_user="quarantine")
    bad = _quarantined(out, missing_user="quarantine")
    assert bad.height == 1
    assert bad["column"][0] == column
    assert reason in bad["reason"][0]
    assert bad["raw_value"][0] == next(iter(cols.values()))[0]
    assert bad["row"][0] == 1 and bad["file"][0] == "f.csv"


def test_every_failing_column_is_named_in_the_reason():
    out = _check(_events(quantity=["x"], price=["-1"]))
    assert out[REASON][0] == "quantity: expected a whole number; price: must be ≥ 0"


def test_quarantine_record_keeps_the_raw_row():
    out = _check(_events(quantity=["x"]))
    record = _quarantined(out)["record"][0]
    assert '"quantity":"x"' in record and '"user_id":"u1"' in record


def test_float_ids_from_spreadsheets_keep_their_written_form():
    frame = pl.DataFrame(
        {"user_id": [13085.0, 12.5], "event_time": ["2026-11-27"] * 2, "event_type": ["view"] * 2}
    )
    out = _check(frame)
    assert out["user_id"].to_list() == ["13085", "12.5"]


def test_negative_quantities_become_returns_when_configured():
    out = _check(_events(quantity=["-2", "3"], event_type=["purchase", "purchase"]),
                 negative_quantity_as="return")  # fmt: skip
    assert out["event_type"].to_list() == ["return", "purchase"]
    assert out["quantity"].to_list() == [2, 3]
    assert out[REASON].null_count() == 2


def test_negative_quantities_are_quarantined_by_default():
    out = _check(_events(quantity=["-2"]))
    assert out[REASON][0] == "quantity: must be ≥ 1"


def test_cancellation_invoices_become_returns():
    out = _check(_events(order_id=["C489449", "489450", None], quantity=["-3", "2", "1"]),
                 return_order_prefix="C")  # fmt: skip
    assert out["event_type"].to_list() == ["return", "view", "view"]
    assert out["quantity"].to_list() == [3, 2, 1]


def test_non_product_catalogue_rows_are_quarantined():
    frame = pl.DataFrame({"item_id": ["POST", "85123A"], "title": ["POSTAGE", "HEART"]})
    out = _check(frame, source="items", non_product_pattern="^POST$")
    assert out[REASON].to_list() == ["item_id: not a product (configured)", None]


def test_non_product_items_get_their_own_event_type():
    out = _check(_events(item_id=["POST", "85123A", "BANK CHARGES"]),
                 non_product_items=["BANK CHARGES"], non_product_pattern="^POST$")  # fmt: skip
    assert out["event_type"].to_list() == ["non_product", "view", "non_product"]


def test_a_guest_purchase_is_kept_by_default_and_quarantined_only_when_configured():
    guest = _events(user_id=[None], event_type=["purchase"], price=["5.00"])
    out = _check(guest)
    assert out[REASON][0] is None and _quarantined(out).height == 0
    kept = accepted_rows(out, EVENTS)
    assert kept.height == 1 and kept["user_id"][0] is None and kept["price"][0] == 5.0
    strict = _check(guest, missing_user="quarantine")
    assert strict[REASON][0] == "user_id: required value is missing"


def test_feedback_needs_text_or_rating_and_rating_in_range():
    frame = pl.DataFrame(
        {
            "created_at": ["2026-11-27"] * 3,
            "text": ["fine", None, None],
            "rating": [None, "7", None],
        }
    )
    out = _check(frame, source="feedback")
    assert out[REASON].to_list() == [
        None,
        "rating: must be between 1 and 5",
        "needs at least one of text or rating",
    ]
    assert set(accepted_rows(out, FEEDBACK).columns) >= {"_row", "text"}
    assert out[BAD].to_list() == [False, True, True]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "", "u2"]),
            st.sampled_from(["2026-11-27T10:00:00Z", "bad", "", "2026-11-27"]),
            st.sampled_from(["1", "0", "-1", "x", "", "7"]),
            st.sampled_from(["9.99", "-1", "", "nan", "0"]),
        ),
        max_size=40,
    ),
    st.sampled_from(["guest", "quarantine"]),
)
def test_every_row_is_either_accepted_or_quarantined(rows, missing_user):
    frame = pl.DataFrame(
        {
            "user_id": [r[0] or None for r in rows],
            "event_time": [r[1] or None for r in rows],
            "event_type": ["view"] * len(rows),
            "quantity": [r[2] or None for r in rows],
            "price": [r[3] or None for r in rows],
        },
        schema=dict.fromkeys(
            ["user_id", "event_time", "event_type", "quantity", "price"], pl.String
        ),
    )
    out = _check(frame, missing_user=missing_user)
    good = accepted_rows(out, EVENTS)
    bad = _quarantined(out, missing_user=missing_user)
    assert good.height + bad.height == len(rows)
    assert sorted(good["_row"].to_list() + bad["row"].to_list()) == list(range(1, len(rows) + 1))
    assert good["user_id"].null_count() == 0 or missing_user == "guest"
    assert good["event_time"].null_count() == 0
    assert (good["price"].drop_nulls() >= 0).all() and (good["quantity"].drop_nulls() >= 1).all()


def test_mixed_timestamp_spellings_in_one_file_all_parse():
    texts = ["2026-11-27T10:00:00+00:00", " 2026-11-27 10:00:00", "2026-11-27T10:00:00Z", "bad"]
    out = _check(_events(event_time=texts))
    assert out["event_time"].to_list()[:3] == [datetime(2026, 11, 27, 10, tzinfo=UTC)] * 3
    assert out[REASON].to_list()[:3] == [None] * 3
    assert out[REASON][3].startswith("event_time: expected a timestamp")
