"""The report page: words from numbers, CSV downloads, and the page in a real Chromium."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from nightowl.tasks.report import page
from nightowl.tasks.report.inputs import ReportInputs
from nightowl.tasks.report.kpis import first_purchase_days, kpi_daily, segments
from tests.browser import coloured_share, start_tags, visit
from tests.tasks.report.test_kpis import AS_OF, FEEDBACK, ROWS, SCORES, VALUE, events


def _frames() -> tuple[dict[str, pl.DataFrame], ReportInputs]:
    ev = events(ROWS)
    kpi = kpi_daily(ev, first_purchase_days(ev, AS_OF), FEEDBACK, AS_OF, 14)
    inputs = ReportInputs(as_of=AS_OF, events=ev, items=None, predictions={"user_scores": SCORES})
    return {"kpi_daily": kpi, "segments": segments(SCORES, VALUE)}, inputs


def test_what_changed_says_the_numbers_in_words():
    frames, inputs = _frames()
    story = [finding.text for finding in page.what_changed(frames, inputs)]
    assert story[0] == (
        "Revenue on Fri 27 Nov was 21: up 110 % on the day before, up 110 % on the same day "
        "last week."
    )
    assert story[1].startswith("2 orders from 1 buyers (0 of them first-time); 33.3% of 3")
    assert "1 customers are at high churn risk" in story[-1]


def test_changes_read_as_people_say_them():
    assert page._change(0.123) == "up 12 %" and page._change(-0.03) == "down 3 %"
    assert page._change(0.001) == "flat" and page._change(None) == "no comparison"
    assert page._change(0.004, relative=False) == "up 0.4 points"


def test_csv_joins_lists_so_a_spreadsheet_opens_them():
    frame = pl.DataFrame({"a": [1], "flags": [["x", "y"]], "s": [{"k": 1}]})
    assert page.csv_bytes(frame).decode().splitlines() == ["a,flags,s", '1,x; y,"{""k"":1}"']


def test_the_page_renders_in_chromium_offline_with_its_charts(tmp_path):
    frames, inputs = _frames()
    story = [page.Finding("one line", "select 1")]
    html = page.render(frames, inputs, story, ["x: not yet"], AS_OF - timedelta(1), "UTC")
    assert "<script src" not in html and "<link" not in html and "<img" not in html
    target = tmp_path / "index.html"
    target.write_text(html)
    seen = visit(target, tmp_path / "shot.png", sort=("table-segments", 1))
    assert seen.errors == [] and [m for m in seen.console if m[0] == "error"] == []
    assert all(url.startswith(("file:", "data:")) for url in seen.requests), seen.requests
    assert seen.charts == 3  # KPIs, segments, churn risk
    assert all(w > 400 and h > 100 for w, h in seen.svg_sizes), seen.svg_sizes
    assert "What changed" in seen.text and "x: not yet" in seen.text
    # The table comes by revenue (users 2, 1, 1); a click on "users" sorts it by users.
    assert seen.sorted_values == [1, 1, 2]
    assert all(coloured_share(shot, None) > 0.02 for shot in seen.chart_shots.values())
    assert coloured_share(seen.chart_shots["chart-kpi"], (0, 114, 178)) > 0.002  # its blue


def test_the_page_is_the_same_bytes_for_the_same_numbers():
    frames, inputs = _frames()
    day = date(2026, 11, 27)
    first = page.render(frames, inputs, [], [], day, "UTC")
    assert page.render(frames, inputs, [], [], day, "UTC") == first


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\"' <b onclick=x>"


def test_text_from_the_data_is_shown_as_text_never_run_as_markup():
    frames, inputs = _frames()
    health = {
        "item_id": "i1", "title": HOSTILE, "category": HOSTILE, "health": "act", "flags": [HOSTILE],
        "units_7d": 3, "units_7d_change": 0.5, "forecast_units": 2.0, "gap_pct": 0.1,
        "feedback": 4, "negative_share": 0.5, "top_complaint": HOSTILE, "revenue_7d": 10.0,
    }  # fmt: skip
    brief = {
        "segment": HOSTILE, "audience": 3, "goal": "win back", "headline": HOSTILE,
        "message": HOSTILE, "top_items": [HOSTILE], "customer_words": [HOSTILE], "send_time": "9",
    }  # fmt: skip
    sentiment = pl.DataFrame({
        "level": ["category"], "category": [HOSTILE], "day": [AS_OF - timedelta(1)],
        "feedback": [4], "negative_share": [0.5], "top_complaints": [[HOSTILE]],
    })  # fmt: skip
    frames |= {"product_health": pl.DataFrame([health]), "campaign_briefs": pl.DataFrame([brief])}
    inputs.predictions["product_sentiment"] = sentiment
    story = [page.Finding(HOSTILE, f"select '{HOSTILE}'")]
    html = page.render(frames, inputs, story, [HOSTILE], AS_OF - timedelta(1), "UTC")
    assert html.count("&lt;script&gt;alert(1)") >= 6  # it is on the page, as text
    tags = start_tags(html)
    assert [t for t, _ in tags].count("script") == 1  # the page's own (sortable tables)
    assert not [t for t, _ in tags if t in ("img", "b", "iframe", "object", "embed")]
    assert not [(t, a) for t, attrs in tags for a in attrs if a.startswith("on")]
    assert 'id="chart-sentiment"' in html  # the chart with the category in its labels


def _evaluated(inputs: ReportInputs) -> ReportInputs:
    from nightowl.tasks.evaluate.rows import MODEL, RULE, Judged, figure_rows

    kinds = {"model": MODEL, "rfm": RULE, "recency_only": RULE}
    parts = [
        figure_rows(
            Judged("propensity", origin, 30, "all_users", 500, "roc_auc"),
            {"model": {"roc_auc": m}, "rfm": {"roc_auc": 0.75}, "recency_only": {"roc_auc": 0.7}},
            kinds,
            ("roc_auc",),
        )
        for origin, m in ((date(2026, 10, 1), 0.8), (date(2026, 10, 15), 0.74))
    ]
    inputs.evaluation = pl.concat(parts)
    scores = inputs.predictions["user_scores"]
    inputs.predictions["user_scores"] = scores.with_columns(model_version=pl.lit("rule:rfm@v1"))
    return inputs


def test_the_models_section_says_whether_each_model_beats_its_rules(tmp_path):
    frames, inputs = _frames()
    html = page.render(frames, inputs, [], [], AS_OF - timedelta(1), "UTC")
    assert "Do the models beat the simple rules?" in html and "Not measured yet" in html

    html = page.render(frames, _evaluated(inputs), [], [], AS_OF - timedelta(1), "UTC")
    target = tmp_path / "index.html"
    target.write_text(html)
    seen = visit(target, tmp_path / "shot.png", sort=("table-model_evaluation", 4))
    assert seen.errors == []
    assert (
        "propensity (all_users, roc_auc): the model does not always beat its best simple rule, "
        "rfm, at 1 of 2 origins (mean 0.7700 vs 0.7500)"
    ) in seen.text
    assert "Served tonight by a simple rule: user_scores: rfm (the model did not beat it)" in (
        seen.text
    )
    assert "origins 2026-10-01 to 2026-10-15" in seen.text
    assert seen.sorted_values == [0.77]


def _with_health(inputs: ReportInputs) -> ReportInputs:
    """Three judged nights of propensity (the served scores losing to RFM on the last two) with
    a reliability curve, and tonight's drift with one drifted input."""
    from nightowl.tasks.health.matured import (
        SERVED,
        Cohort,
        judged_rows,
        reliability,
        reliability_rows,
    )

    parts = []
    for k, served in enumerate((0.82, 0.70, 0.69)):
        night = date(2026, 10, 1) + timedelta(days=k)
        cohort = Cohort(
            "propensity", "v1", night, night, night + timedelta(days=29), "all_users", 500,
            "roc_auc",
        )  # fmt: skip
        figures = {SERVED: {"roc_auc": served}, "rfm": {"roc_auc": 0.75}}
        curve = reliability(
            pl.Series([0, 0, 1, 1]).to_numpy(), pl.Series([0.1, 0.3, 0.6, 0.9]).to_numpy(), 10
        )
        parts += [
            judged_rows(cohort, figures, ("roc_auc",)).with_columns(as_of=pl.lit(night)),
            reliability_rows(cohort, curve).with_columns(as_of=pl.lit(night)),
        ]
    inputs.health = pl.concat(parts)
    inputs.health_settings = inputs.health_settings.model_copy(update={"losing_nights": 2})
    inputs.drift = pl.DataFrame(
        {
            "model": ["propensity", "propensity"],
            "model_version": ["v1", "v1"],
            "reference_as_of": [date(2026, 9, 30)] * 2,
            "kind": ["input", "score"],
            "column": ["recency_days", "p_purchase_30d"],
            "psi": [0.91, 0.02],
            "missing_share": [0.0, 0.0],
            "reference_missing_share": [0.0, 0.0],
            "mean": [400.0, 0.2],
            "reference_mean": [35.0, 0.21],
            "drifted": [True, False],
        }
    )
    return inputs


def test_the_model_health_section_charts_judged_nights_and_raises_the_alerts(tmp_path):
    frames, inputs = _frames()
    html = page.render(frames, inputs, [], [], AS_OF - timedelta(1), "UTC")
    assert "Model health" in html and "No served night has matured yet" in html
    assert 'id="health-banner"' not in html

    html = page.render(frames, _with_health(inputs), [], [], AS_OF - timedelta(1), "UTC")
    target = tmp_path / "index.html"
    target.write_text(html)
    seen = visit(target, tmp_path / "shot.png", sort=("table-model_drift", 3))
    assert seen.errors == [] and [m for m in seen.console if m[0] == "error"] == []
    assert "Model health: 2 alerts" in seen.text
    assert (
        "propensity (all_users): what was served lost to the simple rule rfm on roc_auc for 2 "
        "served nights in a row (2026-10-02, 2026-10-03; mean 0.6950 vs 0.7500)"
    ) in seen.text
    assert "propensity: 1 column(s) drifted from the champion's training data" in seen.text
    assert (
        "propensity (all_users), served 2026-10-03: roc_auc 0.6900 against 0.7500 for the "
        "simple rule rfm: not better"
    ) in seen.text
    assert {"chart-model-health", "chart-calibration"} <= set(seen.chart_shots)
    assert all(coloured_share(seen.chart_shots[c], None) > 0.01 for c in seen.chart_shots)
    assert seen.sorted_values == [0.02, 0.91]  # the psi column, sorted ascending by a click
