"""The morning report: the report tables in the warehouse, and the page people read.

``build_report`` reads the clean and prediction tables as of a date, writes ``kpi_daily``,
``segments``, ``at_risk_customers``, ``product_health`` and ``campaign_briefs`` to the
``reports`` layer, and publishes ``reports/<run date>/index.html`` (one self-contained page)
with every table beside it as CSV. A table whose inputs do not exist yet (no user scores before
the first model, no feedback in a shop without any) is left out and the page says why.
"""

from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from typing import Any, cast

import polars as pl
from pydantic import BaseModel, Field

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import HealthSettings, ReportSettings
from nightowl.schemas.landing import SOURCES
from nightowl.tasks.common.reads import catalogue_before, clean_before
from nightowl.tasks.evaluate.units import evaluation_partition
from nightowl.tasks.report import briefs, kpis, page
from nightowl.tasks.report.inputs import ReportInputs
from nightowl.warehouse.manifest import InputRef, Manifest, combined_hash
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    AT_RISK_CUSTOMERS,
    CAMPAIGN_BRIEFS,
    CATEGORY_FORECAST,
    CLEAN,
    CLEAN_EVENTS,
    DEMAND_FORECAST,
    FEEDBACK_SCORES,
    KPI_DAILY,
    MODEL_DRIFT,
    MODEL_EVALUATION,
    MODEL_HEALTH,
    PRICE_POSITION,
    PRODUCT_HEALTH,
    PRODUCT_SENTIMENT,
    RECOMMENDATIONS,
    REPORT_TABLES,
    SEGMENTS,
    USER_SCORES,
    Table,
)

log = logging.getLogger("nightowl")

TABLES = tuple(t.name for t in REPORT_TABLES)
#: Prediction tables the report reads, at the report's as_of.
READ_TABLES = (
    USER_SCORES,
    RECOMMENDATIONS,
    FEEDBACK_SCORES,
    PRODUCT_SENTIMENT,
    DEMAND_FORECAST,
    CATEGORY_FORECAST,
    PRICE_POSITION,
)
READS = tuple(t.name for t in READ_TABLES)


class ReportReport(BaseModel):
    """What one report build wrote: each table's partition, the page, and what was missing."""

    run_date: str
    as_of: str
    tables: dict[str, dict[str, Any]] = Field(default_factory=dict)
    page: str = ""
    missing: list[str] = Field(default_factory=list)
    #: What went wrong tonight before the report: step run → "failed: …" / "skipped: … failed".
    problems: dict[str, str] = Field(default_factory=dict)
    #: Tables the report would read that tonight did not refresh: table → the night they are from.
    not_tonight: dict[str, str] = Field(default_factory=dict)
    summary: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def _partition(wh: Warehouse, table: Table, as_of: date) -> Manifest | None:
    return wh.manifest(table.layer, table.name, {"as_of": as_of.isoformat()})


def _partitions(
    wh: Warehouse, as_of: date
) -> tuple[dict[Table, Manifest], Manifest | None, list[Manifest]]:
    """The prediction partitions a report as of ``as_of`` reads: tonight's per table, the
    user scores a week before, and the earlier nights' forecasts for the days it shows."""
    tonight = {t: m for t in READ_TABLES if (m := _partition(wh, t, as_of)) is not None}
    week_ago = _partition(wh, USER_SCORES, as_of - timedelta(days=7))
    past = [
        m
        for m in wh.manifests(CATEGORY_FORECAST.layer, CATEGORY_FORECAST.name)
        if as_of - timedelta(days=28) <= date.fromisoformat(m.partition["as_of"]) < as_of
    ]
    return tonight, week_ago, past


def input_refs(wh: Warehouse, as_of: date) -> list[InputRef]:
    """Every partition a report as of ``as_of`` reads (the report step's cache key)."""
    tonight, week_ago, past = _partitions(wh, as_of)
    refs = clean_before(wh, CLEAN_EVENTS.name, as_of)[1] + catalogue_before(wh, as_of)[1]
    evaluated = evaluation_partition(wh, as_of)
    judged, drift = _health(wh, as_of)
    read = (*tonight.values(), *([week_ago] if week_ago else []), *past, *judged)
    extra = [m for m in (drift, evaluated) if m is not None]
    return refs + [m.ref for m in (*read, *extra)]


def _health(wh: Warehouse, as_of: date) -> tuple[list[Manifest], Manifest | None]:
    """The ``model_health`` partitions of the served nights before ``as_of``, and tonight's
    ``model_drift`` partition (None when there is none)."""
    judged = [
        m
        for m in wh.manifests(MODEL_HEALTH.layer, MODEL_HEALTH.name)
        if m.partition["as_of"] < as_of.isoformat()
    ]
    return judged, _partition(wh, MODEL_DRIFT, as_of)


def report_inputs(wh: Warehouse, as_of: date, health: HealthSettings | None = None) -> ReportInputs:
    """What a report as of ``as_of`` reads: clean events and items before it, the prediction
    tables of that as_of, the earlier forecasts and scores it compares with, and the model
    health figures (alerts by ``health``'s thresholds)."""
    events, event_refs = clean_before(wh, CLEAN_EVENTS.name, as_of)
    if events is None:
        raise NotEnoughHistory("the clean events table is empty: run the nightly flow first")
    items, item_refs = catalogue_before(wh, as_of)
    inputs = ReportInputs(as_of=as_of, events=events, items=items, refs=event_refs + item_refs)
    inputs.health_settings = health or HealthSettings()

    def read(
        table: Table, manifests: list[Manifest], with_as_of: bool = False
    ) -> pl.DataFrame | None:
        partitions = [m.partition for m in manifests]
        frame = wh.scan(table.layer, table.name, partitions, partition_columns=with_as_of)
        if frame is None:
            return None
        inputs.refs += [m.ref for m in manifests]
        return frame.collect()

    tonight, week_ago, past = _partitions(wh, as_of)
    for table, manifest in tonight.items():
        if manifest.rows and (frame := read(table, [manifest])) is not None:
            inputs.predictions[table.name] = frame
    inputs.past_forecasts = read(CATEGORY_FORECAST, past, with_as_of=True) if past else None
    inputs.week_ago_scores = read(USER_SCORES, [week_ago]) if week_ago else None
    evaluated = evaluation_partition(wh, as_of)
    inputs.evaluation = read(MODEL_EVALUATION, [evaluated]) if evaluated else None
    judged, drift = _health(wh, as_of)
    if judged and (frame := read(MODEL_HEALTH, judged, with_as_of=True)) is not None:
        inputs.health = frame.with_columns(pl.col("as_of").cast(pl.Date))
    inputs.drift = read(MODEL_DRIFT, [drift]) if drift else None
    return inputs


def report_frames(
    inputs: ReportInputs,
    cfg: ReportSettings,
    timezone: str,
    writer: briefs.BriefWriter,
) -> tuple[dict[str, pl.DataFrame], list[str]]:
    """The report tables from ``inputs`` (those whose inputs exist), and a line per table left
    out saying why."""
    as_of, p = inputs.as_of, inputs.predictions
    frames: dict[str, pl.DataFrame] = {}
    missing: list[str] = []
    scored = p.get(FEEDBACK_SCORES.name)
    feedback = scored.lazy() if scored is not None else None
    firsts = kpis.first_purchase_days(inputs.events, as_of)
    frames[KPI_DAILY.name] = kpis.kpi_daily(inputs.events, firsts, feedback, as_of, cfg.kpi_days)
    scores = p.get(USER_SCORES.name)
    if scores is None:
        why = "no user_scores for this date yet (the propensity model trains once history allows)"
        missing += [f"segments: {why}", f"at_risk_customers: {why}", f"campaign_briefs: {why}"]
    else:
        value = kpis.customer_value(inputs.events, inputs.items, as_of, cfg.value_days)
        frames[SEGMENTS.name] = kpis.segments(scores, value)
        frames[AT_RISK_CUSTOMERS.name] = kpis.at_risk_customers(
            scores, value, p.get(RECOMMENDATIONS.name), as_of, cfg.at_risk_customers
        )
    if inputs.items is None:
        missing.append("product_health: there is no items snapshot")
    else:
        frames[PRODUCT_HEALTH.name] = kpis.product_health(
            inputs.items,
            inputs.events,
            p.get(DEMAND_FORECAST.name),
            p.get(PRICE_POSITION.name),
            feedback,
            kpis.item_complaints(p.get(PRODUCT_SENTIMENT.name)),
            as_of,
            cfg.product_days,
            cfg.model_dump(),
        )
    recommendations = p.get(RECOMMENDATIONS.name)
    if scores is not None and recommendations is None:
        missing.append("campaign_briefs: no recommendations for this date")
    elif scores is not None and recommendations is not None:
        picked = briefs.segment_items(scores, recommendations, cfg.brief_items)
        # Series.first() is typed as any Python scalar; model_version is a String column.
        model_version = cast("str | None", recommendations["model_version"].first())
        frames[CAMPAIGN_BRIEFS.name] = briefs.campaign_briefs(
            frames[SEGMENTS.name],
            picked,
            briefs.segment_words(picked, feedback, cfg.brief_words),
            briefs.send_times(inputs.events, scores, as_of, cfg.send_time_days, timezone),
            writer,
            timezone,
            model_version,
        )
    return frames, missing


#: The step whose run refreshes each prediction table the report reads.
WRITTEN_BY = {
    USER_SCORES.name: "score-users",
    RECOMMENDATIONS.name: "recommend",
    FEEDBACK_SCORES.name: "feedback-scores",
    PRODUCT_SENTIMENT.name: "product-sentiment",
    DEMAND_FORECAST.name: "forecast",
    CATEGORY_FORECAST.name: "forecast",
    PRICE_POSITION.name: "price-position",
}


def not_refreshed(wh: Warehouse, run_date: date, problems: dict[str, str]) -> dict[str, str]:
    """Each table the report reads that tonight did not refresh, with the night its newest
    partition is from ("" if none): prediction tables without tonight's as_of that an earlier
    night wrote or whose step went wrong tonight, and the clean tables of sources whose ingest
    or clean did not complete."""
    as_of = run_date + timedelta(days=1)
    stale: dict[str, str] = {}
    for table in READ_TABLES:
        if _partition(wh, table, as_of) is not None:
            continue
        earlier = [m.partition["as_of"] for m in wh.manifests(table.layer, table.name)]
        earlier = [d for d in earlier if d < as_of.isoformat()]
        if earlier:  # as of the morning after a night: the night itself is the day before
            stale[table.name] = (date.fromisoformat(max(earlier)) - timedelta(days=1)).isoformat()
        elif WRITTEN_BY[table.name] in problems:
            stale[table.name] = ""  # never written: tonight would have been its first night
    for source in SOURCES:
        if not {f"ingest-{source}", f"clean-{source}"} & problems.keys():
            continue
        days = [m.partition["dt"] for m in wh.manifests(CLEAN[source].layer, CLEAN[source].name)]
        days = [d for d in days if d <= run_date.isoformat()]
        if days:
            stale[source] = max(days)
    return stale


def build_report(
    wh: Warehouse,
    run_date: date,
    cfg: ReportSettings,
    timezone: str,
    problems: dict[str, str] | None = None,
    health: HealthSettings | None = None,
) -> ReportReport:
    """Write the report tables as of the day after ``run_date`` and publish its page, headed by
    what went wrong tonight (``problems``: step run → what), the tables it left stale and the
    model-health alerts (by ``health``'s thresholds)."""
    started = time.perf_counter()
    as_of = run_date + timedelta(days=1)
    inputs = report_inputs(wh, as_of, health)
    writer = briefs.brief_writer(cfg.brief_writer)
    frames, missing = report_frames(inputs, cfg, timezone, writer)
    report = ReportReport(
        run_date=run_date.isoformat(),
        as_of=as_of.isoformat(),
        missing=missing,
        problems=problems or {},
        not_tonight=not_refreshed(wh, run_date, problems or {}),
    )
    for table in REPORT_TABLES:
        partition = {"as_of": as_of.isoformat()}
        if table.name not in frames:
            wh.drop_partition(table.layer, table.name, partition)  # a stale one would mislead
            continue
        manifest = wh.write_partition(
            table.layer,
            table.name,
            partition,
            frames[table.name],
            inputs=inputs.refs,
            stats={"writer": writer.name} if table is CAMPAIGN_BRIEFS else None,
        )
        report.tables[table.name] = {"rows": manifest.rows, "content_hash": manifest.content_hash}
    story = page.with_caveats(page.what_changed(frames, inputs), report.not_tonight)
    banner = page.Banner(report.problems, report.not_tonight, WRITTEN_BY)
    html = page.render(frames, inputs, story, missing, run_date, timezone, banner)
    files = {"index.html": html.encode()}
    files |= {f"{t}.csv": page.csv_bytes(f) for t, f in frames.items()}
    if inputs.evaluation is not None:
        files[f"{MODEL_EVALUATION.name}.csv"] = page.csv_bytes(inputs.evaluation)
    if inputs.health is not None:
        files[f"{MODEL_HEALTH.name}.csv"] = page.csv_bytes(inputs.health)
    if inputs.drift is not None:
        files[f"{MODEL_DRIFT.name}.csv"] = page.csv_bytes(inputs.drift)
    report.page = str(wh.publish_page(run_date.isoformat(), files) / "index.html")
    report.summary = [finding.text for finding in story]
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def report_fingerprint(wh: Warehouse, as_of: date) -> str:
    """The content hashes of every partition the report as of ``as_of`` reads, combined."""
    return combined_hash([r.content_hash for r in input_refs(wh, as_of)])
