"""The table registry: every table declared once, and writes held to their declaration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import nightowl.tasks.behaviour.units as behaviour  # declares the columns of features/user
from nightowl.errors import NightowlError
from nightowl.schemas.config import FeedbackSettings
from nightowl.schemas.landing import CONTRACTS, SOURCES
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.ingest import clean
from nightowl.tasks.ingest import contract as ingest
from nightowl.tasks.ingest.units import _verdicts
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CLEAN,
    CLEAN_DERIVED,
    HELD,
    LAYERS,
    LINEAGE,
    PRODUCT_HEALTH,
    QUARANTINE,
    QUARANTINE_SCHEMA,
    RAW,
    RAW_ROW,
    TABLES,
    USER_FEATURES,
    USER_SCORES,
    Table,
    TableContractError,
    table,
)

AS_OF = {"as_of": "2026-11-28"}


def frame_of(t: Table, rows: int = 1, **columns: list) -> pl.DataFrame:
    """A frame of ``t``'s columns, in order: ``columns`` as given, null elsewhere."""
    n = len(next(iter(columns.values()))) if columns else rows
    return pl.DataFrame({c: columns.get(c, [None] * n) for c in t.schema}, schema=t.schema)


def as_table(t: Table, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame``'s columns in ``t``'s order, with the columns of ``t`` it lacks as nulls (test
    data that names only the columns a test is about). Its own columns must be ``t``'s."""
    assert set(frame.columns) <= set(t.schema), set(frame.columns) - set(t.schema)
    return frame.select(
        pl.col(c) if c in frame.columns else pl.lit(None, dtype).alias(c)
        for c, dtype in t.schema.items()
    )


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path)


def _scores() -> pl.DataFrame:
    return frame_of(
        USER_SCORES,
        user_id=["u1", "u2"],
        p_purchase_30d=[0.25, 0.5],
        churn_risk=[0.75, None],
        risk_tier=["medium", "prospect"],
        segment=["loyal", "prospect"],
        model_version=["v1"] * 2,
    )


def _refused(wh: Warehouse, frame: pl.DataFrame, match: str, partition=AS_OF) -> None:
    with pytest.raises(TableContractError, match=match):
        wh.write_partition("predictions", "user_scores", partition, frame)
    assert not wh.partition_dir("predictions", "user_scores", partition).exists()  # not written


def test_a_matching_frame_is_written_and_reads_back(wh):
    frame = _scores()
    m = wh.write_partition(USER_SCORES.layer, USER_SCORES.name, AS_OF, frame)
    assert m.columns == {name: str(dtype) for name, dtype in USER_SCORES.schema.items()}
    back = wh.scan(USER_SCORES.layer, USER_SCORES.name, [AS_OF]).collect()
    assert back.schema == USER_SCORES.schema
    assert back.equals(frame)


def test_a_missing_column_is_refused_naming_it_and_its_dtype(wh):
    _refused(
        wh,
        _scores().drop("churn_risk"),
        r"predictions/user_scores: .*column 'churn_risk' is missing \(expected Float64\)",
    )


def test_an_unexpected_column_is_refused_naming_it(wh):
    frame = _scores().with_columns(surprise=pl.lit(1))
    _refused(wh, frame, r"column 'surprise' \(Int32\) is not one of the table's columns")


def test_a_wrong_dtype_is_refused_with_what_came_and_what_was_expected(wh):
    frame = _scores().with_columns(pl.col("churn_risk").cast(pl.Float32))
    _refused(wh, frame, "column 'churn_risk' is Float32, expected Float64")


def test_a_null_typed_column_is_refused(wh):
    frame = _scores().with_columns(risk_tier=pl.lit(None))
    _refused(wh, frame, "column 'risk_tier' is Null, expected String")


def test_a_column_out_of_order_is_refused(wh):
    frame = _scores().select("p_purchase_30d", pl.exclude("p_purchase_30d"))
    _refused(wh, frame, "column 1 is 'p_purchase_30d', expected 'user_id'")


def test_a_timestamp_needs_its_unit_and_time_zone(wh):
    t = table("predictions", "feedback_scores")
    naive = frame_of(t, feedback_id=["f1"]).with_columns(
        pl.col("created_at").dt.replace_time_zone(None)
    )
    with pytest.raises(TableContractError, match=r"'created_at' is Datetime\(time_unit='us', "):
        wh.write_partition(t.layer, t.name, AS_OF, naive)


def test_a_wrong_partition_key_is_refused(wh):
    wrong = {"dt": "2026-11-28"}
    _refused(wh, _scores(), r"partition \{'dt': '2026-11-28'\}.* expected \['as_of'\]", wrong)


def test_an_undeclared_table_is_refused(wh):
    undeclared = r"predictions/user_score is not a warehouse table: declare it in nightowl/"
    with pytest.raises(TableContractError, match=undeclared) as refused:
        wh.write_partition("predictions", "user_score", AS_OF, _scores())
    assert isinstance(refused.value, NightowlError) and isinstance(refused.value, ValueError)
    with pytest.raises(TableContractError, match="layer 'scratch': none"):
        wh.write_partition("scratch", "t", AS_OF, _scores())
    assert not list(wh.root.rglob("*.parquet"))


def test_a_column_named_by_a_setting_may_carry_any_value_of_it(wh):
    other_horizon = _scores().rename({"p_purchase_30d": "p_purchase_14d"})
    m = wh.write_partition(USER_SCORES.layer, USER_SCORES.name, AS_OF, other_horizon)
    assert "p_purchase_14d" in m.columns
    both = other_horizon.with_columns(p_purchase_30d=pl.lit(0.5))
    fits = "columns p_purchase_14d, p_purchase_30d all fit p_purchase_<H>d: one is expected"
    _refused(wh, both, fits, {"as_of": "2026-11-29"})
    health = frame_of(PRODUCT_HEALTH, item_id=["i1"]).rename(
        {"units_28d": "units_35d", "revenue_28d": "revenue_35d"}
    )
    wh.write_partition(PRODUCT_HEALTH.layer, PRODUCT_HEALTH.name, AS_OF, health)
    swapped = frame_of(PRODUCT_HEALTH, item_id=["i1"]).rename({"units_7d": "units_6d"})
    with pytest.raises(TableContractError, match="column 'units_7d' is missing"):
        wh.write_partition(PRODUCT_HEALTH.layer, PRODUCT_HEALTH.name, AS_OF, swapped)


def test_a_file_added_to_an_accumulating_table_is_held_to_it_too(wh, tmp_path):
    raw = RAW["events"]
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    frame_of(raw, _row=[1], event_id=["e1"]).write_parquet(good)
    frame_of(raw, _row=[1]).drop("device").write_parquet(bad)
    with pytest.raises(TableContractError, match=r"raw/events: .*column 'device' is missing"):
        wh.add_file(raw.layer, raw.name, {"dt": "2026-11-27"}, "bad.parquet", bad)
    wh.add_file(raw.layer, raw.name, {"dt": "2026-11-27"}, "good.parquet", good)
    assert wh.seal_partition(raw.layer, raw.name, {"dt": "2026-11-27"}).rows == 1


# ---- the registry against the warehouse and the code that writes it ----------------------


def test_every_declared_table_is_written_found_and_read_back_with_its_schema(wh):
    for t in TABLES.values():
        wh.write_partition(t.layer, t.name, t.partition("2026-11-27"), frame_of(t, rows=0))
    assert set(wh.tables()) == set(TABLES)  # each table is found where it was declared
    for t in TABLES.values():
        back = wh.scan(t.layer, t.name, [t.partition("2026-11-27")]).collect_schema()
        assert back == t.schema, t.path


def test_the_registry_covers_every_layer_and_every_source():
    assert {t.layer for t in TABLES.values()} == set(LAYERS)
    assert list(dict.fromkeys(t.layer for t in TABLES.values())) == list(LAYERS)  # in order
    for source in SOURCES:
        assert table("raw", source) is RAW[source]
        assert table("clean", source) is CLEAN[source]
        assert table("held", f"source={source}") is HELD[source]
        for stage in ("ingest", "clean"):
            assert (
                table("quarantine", f"source={source}/stage={stage}") is QUARANTINE[(source, stage)]
            )
    assert all(t.doc and "\n" not in t.doc for t in TABLES.values())


def test_raw_and_clean_columns_are_the_landing_contracts_with_what_ingest_and_clean_add():
    assert list(RAW_ROW) == [ingest.ROW]
    assert list(LINEAGE) == clean.LINEAGE
    for source, spec in clean.SPECS.items():
        assert tuple(CLEAN_DERIVED.get(source, {})) == spec.derived
        assert list(RAW[source].schema) == [ingest.ROW, *CONTRACTS[source].names]
        assert list(CLEAN[source].schema) == [*CONTRACTS[source].names, *spec.derived, *LINEAGE]


@pytest.mark.parametrize("source", SOURCES)
def test_clean_held_and_quarantine_tables_are_what_clean_makes(source):
    """The dtypes, from the clean code itself: its verdicts over no rows of the source."""
    spec = clean.SPECS[source]
    lineage = {"_run": pl.String(), clean.ENTRY: pl.UInt32(), "source_file": pl.String()}
    raw = pl.LazyFrame(schema={**lineage, "source_row": pl.Int64(), **CONTRACTS[source].schema})
    cutoff = datetime(2026, 11, 28, tzinfo=UTC)
    if CONTRACTS[source].partition_column is None:
        judged = clean.cleaned_rows(raw, spec, cutoff).with_columns(
            pl.lit(date(2026, 11, 27)).alias("dt")
        )
    else:
        horizon = cutoff + timedelta(days=366)
        judged = _verdicts(
            spec, raw, SourceConfig(), cutoff, horizon, 3.0, FeedbackSettings(), None
        )
    out = {
        CLEAN[source]: clean.accepted_clean_rows(judged, spec),
        HELD[source]: clean.held_rows(judged, spec, 24.0),
        QUARANTINE[(source, "clean")]: clean.rejected_clean_rows(judged, spec),
    }
    for t, rows in out.items():
        assert rows.drop("dt").collect_schema() == t.schema, t.path  # dt: the partition key
    assert QUARANTINE[(source, "ingest")].schema == QUARANTINE_SCHEMA


def test_the_features_table_has_what_the_features_code_computes():
    assert USER_FEATURES.schema == behaviour.user_features_schema()
    names = list(USER_FEATURES.schema)
    assert (names[0], names[-1]) == ("user_id", "as_of") and len(names) > 50
