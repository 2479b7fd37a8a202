"""The report page: charts, tables and a "what changed" summary in one self-contained HTML file.

Charts are drawn by matplotlib as inline SVG, styles and the one small script (sortable tables)
are inline too, so the page opens from disk, from an e-mail attachment or from an object store
with no network. Every figure on the page names the ``nightowl query`` that reproduces it.
"""

from __future__ import annotations

import io
import json
import math
from datetime import date, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import polars as pl

from nightowl.tasks.evaluate import rows as evaluation
from nightowl.tasks.health import matured
from nightowl.tasks.report.kpis import purchase_lines

if TYPE_CHECKING:
    from nightowl.tasks.report.inputs import ReportInputs

#: Colours of the risk tiers and of the charts (colour-blind safe: Okabe-Ito).
TIER_COLOURS = {"low": "#009E73", "medium": "#E69F00", "high": "#D55E00"}
INK, ACCENT, MUTED = "#222222", "#0072B2", "#999999"


# ---- words ----------------------------------------------------------------------------------


def _change(value: float | None, relative: bool = True) -> str:
    """``up 12 %``, ``down 3 %``, ``flat``; for rates, points: ``up 0.4 points``."""
    if value is None:
        return "no comparison"
    if relative:
        pct = value * 100
        return "flat" if abs(pct) < 0.5 else f"{'up' if pct > 0 else 'down'} {abs(pct):.0f} %"
    pts = value * 100
    return "flat" if abs(pts) < 0.05 else f"{'up' if pts > 0 else 'down'} {abs(pts):.1f} points"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


class Finding(NamedTuple):
    """One line of "what changed", the query that gives its numbers, and the tables (clean or
    prediction) its numbers rest on."""

    text: str
    query: str
    rests_on: tuple[str, ...] = ()


class Banner(NamedTuple):
    """What the top of the page says went wrong tonight, before any number is read."""

    #: Step run → "failed: <why>" or "skipped: <step> failed".
    problems: dict[str, str]
    #: Table → the night (prediction tables) or newest day (clean tables) it is from.
    not_tonight: dict[str, str]
    #: Prediction table → the step run that refreshes it.
    written_by: dict[str, str]

    def failed(self) -> dict[str, str]:
        """The steps that failed, and why."""
        return {
            step: why.removeprefix("failed: ")
            for step, why in self.problems.items()
            if why.startswith("failed: ")
        }

    def skipped(self) -> dict[str, list[str]]:
        """Per failed step, the steps that did not run because of it."""
        found: dict[str, list[str]] = {}
        for step, why in self.problems.items():
            if why.startswith("skipped: "):
                failed = why.removeprefix("skipped: ").removesuffix(" failed")
                found.setdefault(failed, []).append(step)
        return found

    def stale(self) -> list[str]:
        """One line per table not refreshed tonight, with the night it is from and why."""
        lines = []
        for table, night in self.not_tonight.items():
            step = self.written_by.get(table)
            if step is None:  # a clean table: its source's files of tonight are not in it
                lines.append(f"{table}: newest data from {night}; tonight's files are not in it")
                continue
            why = self.problems.get(step)
            because = f" ({step} {why.split(':', 1)[0]})" if why else ""
            since = f"from the night of {night}, not tonight's" if night else "none"
            lines.append(f"{table}: {since}{because}")
        return lines


def _night(night: str) -> str:
    return f"from {night}" if night else "none"


def with_caveats(story: list[Finding], not_tonight: dict[str, str]) -> list[Finding]:
    """``story`` with each line that rests on a table tonight did not refresh saying so."""
    caveated = []
    for finding in story:
        stale = [t for t in finding.rests_on if t in not_tonight]
        if stale:
            names = ", ".join(f"{t} ({_night(not_tonight[t])})" for t in stale)
            finding = finding._replace(text=f"{finding.text} Not tonight's data: {names}.")
        caveated.append(finding)
    return caveated


#: What product health's flags are computed from: sales, forecast, prices, feedback.
HEALTH_RESTS_ON = (
    "events",
    "demand_forecast",
    "price_position",
    "market_prices",
    "feedback_scores",
    "product_sentiment",
)


def what_changed(frames: dict[str, pl.DataFrame], inputs: ReportInputs) -> list[Finding]:
    """A few sentences on what changed, written from the report tables' numbers, each with
    the ``nightowl query`` that shows them (pinned to this report's as_of)."""
    at = f"as_of = '{inputs.as_of}'"
    lines: list[Finding] = []
    kpi = frames.get("kpi_daily")
    if kpi is not None and kpi.height:
        last = kpi.row(-1, named=True)
        lines.append(
            Finding(
                f"Revenue on {last['day']:%a %d %b} was {_money(last['revenue'])}: "
                f"{_change(last['revenue_dod'])} on the day before, "
                f"{_change(last['revenue_wow'])} on the same day last week.",
                f"select day, revenue, revenue_dod, revenue_wow from kpi_daily_history where {at} "
                "order by day desc limit 8",
                ("events",),
            )
        )
        conversion = (
            f"{last['conversion']:.1%} of {last['active_users']:,} active users bought"
            if last["conversion"] is not None
            else "nobody was active"
        )
        lines.append(
            Finding(
                f"{last['orders']:,} orders from {last['buyers']:,} buyers "
                f"({last['new_buyers']:,} of them first-time); {conversion} "
                f"({_change(last['conversion_wow'], relative=False)} week over week).",
                "select orders, buyers, new_buyers, active_users, conversion, conversion_wow "
                f"from kpi_daily_history where {at} order by day desc limit 1",
                ("events",),
            )
        )
        if kpi.height >= 14:
            week, before = kpi.tail(7), kpi.slice(kpi.height - 14, 7)
            parts = []
            labels = {
                "revenue": "revenue",
                "orders": "orders",
                "active_users": "active users",
                "returns": "returns",
            }
            for name, label in labels.items():
                # Series.sum() is typed to allow a Decimal; these KPI columns are ints or floats.
                now, then = cast(float, week[name].sum()), cast(float, before[name].sum())
                parts.append(f"{label} {_change((now - then) / then if then else None)}")
            lines.append(
                Finding(
                    "The last 7 days against the 7 before: " + ", ".join(parts) + ".",
                    "select day > (select max(day) - 7 from kpi_daily_history where " + at + ") "
                    "last_7_days, sum(revenue), sum(orders), sum(active_users), sum(returns) from "
                    f"kpi_daily_history where {at} and day > (select max(day) - 14 from "
                    f"kpi_daily_history where {at}) group by 1",
                    ("events",),
                )
            )
        if last["negative_feedback_share"] is not None and last["feedback"]:
            lines.append(
                Finding(
                    f"{last['feedback']:,} feedback items; {last['negative_feedback_share']:.0%} "
                    f"negative ({_change(last['negative_feedback_share_wow'], relative=False)} "
                    "on the same day last week).",
                    "select feedback, negative_feedback_share, negative_feedback_share_wow from "
                    f"kpi_daily_history where {at} order by day desc limit 1",
                    ("feedback", "feedback_scores"),
                )
            )
    risk = frames.get("at_risk_customers")
    scores = inputs.predictions.get("user_scores")
    if scores is not None:
        high = scores.filter(pl.col("risk_tier") == "high").height
        sentence = f"{high:,} customers are at high churn risk"
        counts = [
            f"(select count(*) from user_scores_history where {at} and risk_tier = 'high') "
            "high_risk"
        ]
        if inputs.week_ago_scores is not None:
            high_before = inputs.week_ago_scores.filter(pl.col("risk_tier") == "high").height
            delta = high - high_before
            sentence += f" ({'+' if delta >= 0 else ''}{delta:,} on a week ago)"
            week_ago = inputs.as_of - timedelta(days=7)
            counts.append(
                "(select count(*) from user_scores_history where "
                f"as_of = '{week_ago}' and risk_tier = 'high') high_risk_week_ago"
            )
        query = "select " + ", ".join(counts)
        if risk is not None and risk.height:
            top = risk.row(0, named=True)
            sentence += (
                f"; the most value at risk is {top['user_id']}'s ({top['segment']}, "
                f"{top['risk_tier']} risk), who spent {_money(top['value'])} in the value window"
            )
            query += (
                ", user_id, segment, risk_tier, value from at_risk_customers_history "
                f"where {at} and rank = 1"
            )
        lines.append(Finding(sentence + ".", query, ("user_scores",)))
    health = frames.get("product_health")
    if health is not None and health.height:
        act = health.filter(pl.col("health") == "act")
        watch = health.filter(pl.col("health") == "watch").height
        sentence = f"{act.height:,} products need action and {watch:,} a look"
        table = f"product_health_history where {at}"
        query = ", ".join(
            f"select (select count(*) from {table} and health = '{h}') {h}"
            if i == 0
            else f"(select count(*) from {table} and health = '{h}') {h}"
            for i, h in enumerate(("act", "watch"))
        )
        if act.height:
            first = act.row(0, named=True)
            sentence += f"; the biggest seller among them, {first['title'] or first['item_id']}: "
            sentence += "; ".join(first["flags"])
            window = next(
                c for c in health.columns if c.startswith("revenue_") and c != "revenue_7d"
            )
            query += (
                ", title, flags, gap_pct, forecast_change, negative_share, feedback from "
                f"{table} and health = 'act' order by {window} desc, item_id limit 1"
            )
        lines.append(Finding(sentence + ".", query, HEALTH_RESTS_ON))
        if health["forecast_units"].is_not_null().any():
            ahead, sold = health["forecast_units"].sum(), health["units_7d"].sum()
            # Series.max() is typed as any Python scalar; forecast_days is an Int32 column.
            days = cast("int | None", health["forecast_days"].max())
            lines.append(
                Finding(
                    f"The next {days} days are forecast at {ahead:,.0f} "
                    f"units, against {sold:,.0f} sold in the last 7.",
                    "select sum(forecast_units), sum(units_7d) from product_health_history "
                    f"where {at}",
                    ("demand_forecast", "events"),
                )
            )
    sentiment = category_sentiment(inputs.predictions.get("product_sentiment"))
    if sentiment is not None and sentiment.height:
        worst = sentiment.row(0, named=True)
        complaint = f", most often about “{worst['complaint']}”" if worst["complaint"] else ""
        lines.append(
            Finding(
                f"Most negative category over the last weeks: {worst['category']} "
                f"({worst['negative_share']:.0%} of {worst['feedback']:,} items negative"
                f"{complaint}).",
                "select category, sum(feedback), sum(feedback * negative_share) / sum(feedback) "
                f"from product_sentiment_history where {at} and level = 'category' group by 1 "
                "order by 3 desc",
                ("product_sentiment",),
            )
        )
    return lines


# ---- charts ---------------------------------------------------------------------------------


def category_sentiment(product_sentiment: pl.DataFrame | None) -> pl.DataFrame | None:
    """Per category over the whole window: feedback, negative share and the newest top
    complaint, most negative first."""
    if product_sentiment is None:
        return None
    rows = product_sentiment.filter(pl.col("level") == "category")
    if rows.is_empty():
        return None
    return (
        rows.sort("day")
        .group_by("category")
        .agg(
            pl.col("feedback").sum(),
            ((pl.col("negative_share") * pl.col("feedback")).sum() / pl.col("feedback").sum())
            .round(4)
            .alias("negative_share"),
            pl.col("top_complaints")
            .filter(pl.col("top_complaints").list.len() > 0)
            .last()
            .list.first()
            .alias("complaint"),
        )
        .sort(["negative_share", "category"], descending=[True, False])
    )


def _finish(plt: Any, fig: Any) -> str:
    """The figure laid out as inline SVG; the figure is closed (pyplot keeps it otherwise)."""
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # the XML prolog and doctype do not belong inside HTML


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: smaller, selectable, the page's font
            "svg.hashsalt": "nightowl",  # the same ids every run: the same page bytes
            "text.parse_math": False,  # "$5 & $10" in a category name is text, not TeX
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.edgecolor": MUTED,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
        }
    )
    return plt, plt.figure(figsize=(width, height))


CHARTS = ("kpi", "segments", "risk", "sentiment", "forecast")


def charts(frames: dict[str, pl.DataFrame], inputs: ReportInputs) -> dict[str, str]:
    """Chart name → inline SVG, for the charts whose data exist."""
    out: dict[str, str] = {}
    kpi = frames.get("kpi_daily")
    if kpi is not None and kpi.height:
        out["kpi"] = _kpi_chart(kpi)
    if "segments" in frames:
        out["segments"] = _segment_chart(frames["segments"])
    scores = inputs.predictions.get("user_scores")
    if scores is not None and scores["churn_risk"].is_not_null().any():
        out["risk"] = _risk_chart(scores)
    sentiment = category_sentiment(inputs.predictions.get("product_sentiment"))
    if sentiment is not None and sentiment.height:
        out["sentiment"] = _sentiment_chart(sentiment)
    forecast = inputs.predictions.get("category_forecast")
    if forecast is not None and kpi is not None:
        out["forecast"] = _forecast_chart(inputs, forecast)
    return out


def _kpi_chart(kpi: pl.DataFrame) -> str:
    plt, fig = _figure(9, 4.6)
    panels = (
        ("revenue", "Revenue", "{:,.0f}"),
        ("orders", "Orders", "{:,.0f}"),
        ("active_users", "Active users", "{:,.0f}"),
        ("conversion", "Conversion", "{:.1%}"),
    )
    days = kpi["day"].to_list()
    for i, (column, title, fmt) in enumerate(panels, 1):
        ax = fig.add_subplot(2, 2, i)
        values = kpi[column].to_list()
        ax.plot(days, values, color=MUTED, linewidth=1, label="daily")
        ax.plot(
            days,
            kpi[column].rolling_mean(7).to_list(),
            color=ACCENT,
            linewidth=2,
            label="7-day mean",
        )
        ax.set_title(f"{title}: {fmt.format(values[-1]) if values[-1] is not None else '-'}")
        ax.yaxis.set_major_formatter(
            plt.FuncFormatter(lambda v, _p, f=fmt: f.format(v) if v == v else "")
        )
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        if i == 1:
            ax.legend(frameon=False, fontsize=7)
    return _finish(plt, fig)


def _segment_chart(segments: pl.DataFrame) -> str:
    plt, fig = _figure(9, 3.4)
    ordered = segments.sort("users")
    ax = fig.add_subplot(1, 2, 1)
    ax.barh(ordered["segment"].to_list(), ordered["users"].to_list(), color=ACCENT)
    ax.set_title("Users per segment")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.barh(
        ordered["segment"].to_list(),
        ordered["revenue_share"].fill_null(0).to_list(),
        color="#56B4E9",
    )
    ax2.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:.0%}"))
    ax2.set_title("Share of revenue (value window)")
    ax2.set_yticklabels([])
    return _finish(plt, fig)


def _risk_chart(scores: pl.DataFrame) -> str:
    plt, fig = _figure(9, 2.8)
    ax = fig.add_subplot(1, 1, 1)
    rated = scores.filter(pl.col("churn_risk").is_not_null())
    groups = [
        (tier, rated.filter(pl.col("risk_tier") == tier)["churn_risk"].to_list())
        for tier in ("low", "medium", "high")
    ]
    ax.hist(
        [values for _, values in groups],
        bins=[i / 20 for i in range(21)],
        stacked=True,
        color=[TIER_COLOURS[t] for t, _ in groups],
        label=[f"{t} ({len(v):,})" for t, v in groups],
    )
    ax.set_title(f"Churn risk of {rated.height:,} recent customers")
    ax.set_xlabel("churn risk (1 - probability of a purchase in the horizon)")
    ax.legend(frameon=False, title="risk tier")
    return _finish(plt, fig)


def _sentiment_chart(sentiment: pl.DataFrame) -> str:
    plt, fig = _figure(9, 0.5 + 0.35 * sentiment.height)
    ordered = sentiment.sort("negative_share")
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(ordered["category"].to_list(), ordered["negative_share"].to_list(), color="#CC79A7")
    for y, (share, n) in enumerate(
        zip(ordered["negative_share"], ordered["feedback"], strict=True)
    ):
        ax.text(share, y, f" {share:.0%} of {n:,}", va="center", fontsize=8, color=INK)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:.0%}"))
    ax.set_title("Negative feedback by category")
    return _finish(plt, fig)


def forecast_frame(inputs: ReportInputs, forecast: pl.DataFrame) -> pl.DataFrame:
    """Units per day: ``actual`` for the last 28 days, what the earlier nights forecast for
    those days one day ahead (``forecast_then``), and tonight's ``forecast`` with its band."""
    as_of = inputs.as_of
    actual = (
        purchase_lines(inputs.events, as_of, 28, kinds=("purchase",))
        .group_by("day")
        .agg(pl.col("quantity").sum().alias("actual"))
        .collect()
    )
    calendar = pl.DataFrame(
        {"day": pl.date_range(as_of - timedelta(days=28), as_of - timedelta(days=1), eager=True)}
    )
    frame = calendar.join(actual, on="day", how="left").with_columns(pl.col("actual").fill_null(0))
    if inputs.past_forecasts is not None:
        then = (
            inputs.past_forecasts.filter(pl.col("horizon") == 1)
            .group_by(pl.col("target_date").alias("day"))
            .agg(pl.col("forecast").sum().alias("forecast_then"))
        )
        frame = frame.join(then, on="day", how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("forecast_then"))
    ahead = (
        forecast.group_by(pl.col("target_date").alias("day"))
        .agg(pl.col("forecast").sum(), pl.col("lower").sum(), pl.col("upper").sum())
        .sort("day")
    )
    return pl.concat([frame, ahead], how="diagonal_relaxed").sort("day")


def _forecast_chart(inputs: ReportInputs, forecast: pl.DataFrame) -> str:
    plt, fig = _figure(9, 3)
    frame = forecast_frame(inputs, forecast)
    ax = fig.add_subplot(1, 1, 1)
    days = frame["day"].to_list()
    ax.plot(days, frame["actual"].to_list(), color=INK, linewidth=1.5, label="sold")
    if frame["forecast_then"].is_not_null().any():
        ax.plot(
            days,
            frame["forecast_then"].to_list(),
            color=ACCENT,
            linestyle="--",
            linewidth=1.2,
            label="forecast the night before",
        )
    ahead = frame.filter(pl.col("forecast").is_not_null())
    ax.plot(
        ahead["day"].to_list(),
        ahead["forecast"].to_list(),
        color="#E69F00",
        linewidth=2,
        label="forecast",
    )
    ax.fill_between(
        ahead["day"].to_list(),
        ahead["lower"].to_list(),
        ahead["upper"].to_list(),
        color="#E69F00",
        alpha=0.2,
        label="80 % intervals, summed",
    )
    ax.set_title("Units per day: sold, and forecast")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(frameon=False, fontsize=7, ncols=2)
    return _finish(plt, fig)


# ---- tables and the page ---------------------------------------------------------------------


def csv_bytes(frame: pl.DataFrame) -> bytes:
    """``frame`` as CSV a spreadsheet opens: lists joined with ``; ``, structs as JSON."""
    return csv_ready(frame).write_csv().encode()


def csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with list columns joined by ``; `` and struct columns as JSON, for CSV."""
    out = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.List | pl.Array):
            out.append(pl.col(name).cast(pl.List(pl.String)).list.join("; "))
        elif isinstance(dtype, pl.Struct):
            out.append(pl.col(name).struct.json_encode())
        else:
            out.append(pl.col(name))
    return frame.select(out)


#: KPIs for which a rise is bad news.
WORSE_WHEN_UP = frozenset({"returns", "return_value", "negative_feedback_share"})
#: Columns holding fractions, shown as percentages.
PERCENTS = frozenset(
    {
        "user_share",
        "revenue_share",
        "mean_churn_risk",
        "mean_propensity",
        "churn_risk",
        "p_purchase",
        "conversion",
        "negative_share",
        "negative_feedback_share",
        "units_7d_change",
        "forecast_change",
    }
)


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    if isinstance(value, float):
        if column in PERCENTS or column.endswith(("_dod", "_wow")):
            return f"{value:.1%}"
        if column == "gap_pct":  # already in percent
            return f"{value:+.1f}%"
        if column.startswith(("units_", "forecast_units")):
            return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_html(frame: pl.DataFrame, columns: list[str], limit: int) -> dict[str, Any]:
    """Header and formatted cells of the first ``limit`` rows of ``columns``."""
    shown = [c for c in columns if c in frame.columns]
    rows = [
        [(_cell(row[c], c), _sort_key(row[c])) for c in shown]
        for row in frame.head(limit).select(shown).iter_rows(named=True)
    ]
    return {"columns": shown, "rows": rows, "total": frame.height}


def _sort_key(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "null"  # JSON has no NaN or Infinity
    return json.dumps(value if isinstance(value, int | float) else str(value or ""))


def model_verdicts(inputs: ReportInputs) -> dict[str, Any]:
    """The "Do the models beat the simple rules?" section: each model's verdict over the
    origins of the newest ``nightowl evaluate``, and tonight's tables served by a simple rule."""
    served_by_rules = sorted(
        f"{table}: {version.split('@')[0].removeprefix('rule:')} (the model did not beat it)"
        for table, frame in inputs.predictions.items()
        if "model_version" in frame.columns
        and frame.height
        and (version := str(frame["model_version"].first())).startswith("rule:")
    )
    figures = inputs.evaluation
    if figures is None or not figures.height:
        return {"lines": [], "table": None, "rules": served_by_rules, "evaluated": None}
    judged = evaluation.summary(evaluation.verdicts(figures))
    shown = judged.select(
        "model",
        "protocol",
        "metric",
        pl.format("{} of {}", "won", "origins").alias("won"),
        pl.col("model_value").round(4),
        "best_rule",
        pl.col("rule_value").round(4),
    )
    # min() and max() of a pl.Date column with rows: dates (typed as any Python scalar).
    first, last = cast(date, figures["origin"].min()), cast(date, figures["origin"].max())
    return {
        "lines": evaluation.verdict_lines(judged),
        "table": table_html(shown, shown.columns, 50),
        "rules": served_by_rules,
        "evaluated": f"origins {first} to {last}",
    }


def health_alerts(inputs: ReportInputs) -> list[str]:
    """The model-health alerts as of the page's date: models whose served predictions lost to
    their best simple rule on the newest judged nights, and drifted inputs or scores."""
    cfg = inputs.health_settings
    lines = []
    if inputs.health is not None and inputs.health.height:
        streaks = matured.losing_streaks(inputs.health, cfg.losing_nights)
        lines += matured.losing_alerts(streaks)
    if inputs.drift is not None and inputs.drift.height:
        lines += matured.drift_alerts(inputs.drift, cfg.psi_threshold)
    return lines


def model_health_view(inputs: ReportInputs) -> dict[str, Any]:
    """The "Model health" section: per model the served primary figure beside its best simple
    rule over the judged nights (a chart and the newest night in words), the newest reliability
    curve of the purchase probabilities, tonight's drift table, and the alerts."""
    view: dict[str, Any] = {"lines": [], "chart": None, "calibration": None, "drift": None}
    view["psi"] = inputs.health_settings.psi_threshold
    view["alerts"] = health_alerts(inputs)
    health = inputs.health
    if health is not None and health.height:
        judged = matured.health_verdicts(health)
        if judged.height:
            view["chart"] = _health_chart(judged)
        newest = matured.newest_verdicts(judged)
        view["lines"] = [
            f"{r['model']} ({r['protocol']}), served {r['origin']}: {r['metric']} "
            f"{r['model_value']:.4f} against {r['rule_value']:.4f} for the simple rule "
            f"{r['best_rule']}: {'better' if r['beats'] else 'not better'}"
            for r in newest.iter_rows(named=True)
        ]
        curve = _newest_curve(health, "propensity")
        if curve is not None:
            view["calibration"] = _calibration_chart(*curve)
        # min() and max() of a pl.Date column with rows: dates (typed as any Python scalar).
        first, last = cast(date, health["as_of"].min()), cast(date, health["as_of"].max())
        view["judged"] = f"served nights {first} to {last}"
    drift = inputs.drift
    if drift is not None and drift.height:
        shown = drift.sort(["drifted", "psi"], descending=True, nulls_last=True).select(
            "model",
            "kind",
            "column",
            pl.col("psi").round(3),
            pl.col("reference_missing_share").round(3).alias("missing_then"),
            pl.col("missing_share").round(3).alias("missing_now"),
            pl.col("reference_mean").round(3).alias("mean_then"),
            pl.col("mean").round(3).alias("mean_now"),
            pl.when("drifted").then(pl.lit("yes")).otherwise(pl.lit("no")).alias("drifted"),
            "reference_as_of",
        )
        view["drift"] = table_html(shown, shown.columns, 25)
    return view


def _newest_curve(health: pl.DataFrame, model: str) -> tuple[pl.DataFrame, date] | None:
    """The reliability curve (bin, predicted, observed, count) of ``model``'s newest judged
    night, and that night."""
    rows = health.filter((pl.col("model") == model) & pl.col("bin").is_not_null())
    if not rows.height:
        return None
    night = cast(date, rows["as_of"].max())
    curve = (
        rows.filter(pl.col("as_of") == night)
        .with_columns(pl.col("metric").str.strip_prefix("reliability_"))
        .pivot(on="metric", index="bin", values="value")
        .sort("bin")
    )
    return curve, night


def _health_chart(judged: pl.DataFrame) -> str:
    """One panel per model and protocol: the served primary figure and the best simple rule's
    over the served nights judged."""
    from matplotlib.dates import DateFormatter

    groups = judged.partition_by("model", "protocol", maintain_order=True)
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    plt, fig = _figure(9, 2.6 * rows)
    for i, part in enumerate(groups, 1):
        part = part.sort("origin")
        ax = fig.add_subplot(rows, columns, i)
        nights = part["origin"].to_list()
        ax.plot(nights, part["model_value"].to_list(), color=ACCENT, marker="o", label="served")
        ax.plot(
            nights, part["rule_value"].to_list(), color=MUTED, marker="s", label="best simple rule"
        )
        ax.set_title(f"{part['model'][0]}: {part['metric'][0]}\n{part['protocol'][0]}", fontsize=9)
        # One tick per judged night (at most eight), a day's margin either side.
        ax.set_xticks(nights[:: max(1, math.ceil(len(nights) / 8))])
        ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
        ax.set_xlim(nights[0] - timedelta(days=1), nights[-1] + timedelta(days=1))
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        if i == 1:
            ax.legend(frameon=False, fontsize=7)
    return _finish(plt, fig)


def _calibration_chart(curve: pl.DataFrame, night: date) -> str:
    """Predicted against observed purchase rates per probability bin, and the diagonal."""
    plt, fig = _figure(4.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color=MUTED, linewidth=1, linestyle="--", label="perfect")
    ax.plot(
        curve["predicted"].to_list(),
        curve["observed"].to_list(),
        color=ACCENT,
        marker="o",
        label="served",
    )
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("share who bought")
    ax.set_title(f"Reliability, served {night}")
    ax.legend(frameon=False, fontsize=7)
    return _finish(plt, fig)


def render(
    frames: dict[str, pl.DataFrame],
    inputs: ReportInputs,
    story: list[Finding],
    missing: list[str],
    run_date: date,
    timezone: str,
    banner: Banner | None = None,
) -> str:
    """The whole report page as one HTML string, headed by ``banner`` when tonight went wrong."""
    import jinja2

    source = resources.files("nightowl.tasks.report").joinpath("report.html.j2").read_text()
    # One report table: sortable, each cell's raw value in data-v, its query and CSV below.
    table = resources.files("nightowl.tasks.report").joinpath("report_table.html.j2").read_text()
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"page": source, "table": table}),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    kpi = frames.get("kpi_daily")
    tiles = []
    if kpi is not None and kpi.height:
        last = kpi.row(-1, named=True)
        for name, label, money in (
            ("revenue", "Revenue", True),
            ("orders", "Orders", False),
            ("buyers", "Buyers", False),
            ("conversion", "Conversion", False),
            ("average_order_value", "Average order", True),
            ("returns", "Returns", False),
            ("mean_rating", "Mean rating", False),
            ("negative_feedback_share", "Negative feedback", False),
        ):
            value = last[name]
            relative = name not in ("conversion", "mean_rating", "negative_feedback_share")
            shown = (
                "-"
                if value is None
                else f"{value:.1%}"
                if name in ("conversion", "negative_feedback_share")
                else f"{value:.2f}"
                if name == "mean_rating"
                else _money(value)
                if money
                else f"{value:,}"
            )
            wow = last[f"{name}_wow"]
            tiles.append(
                {
                    "label": label,
                    "value": shown,
                    "wow": _change(wow, relative=relative)
                    if name != "mean_rating"
                    else ("no comparison" if wow is None else f"{wow:+.2f}"),
                    # Green when it went the good way: more returns or complaints is red.
                    "direction": ""
                    if wow is None or abs(wow) < 1e-9
                    else "good"
                    if (wow > 0) != (name in WORSE_WHEN_UP)
                    else "bad",
                    "column": name,
                }
            )
    columns = {
        "segments": [
            "segment",
            "users",
            "user_share",
            "customers",
            "revenue",
            "revenue_share",
            "mean_churn_risk",
            "mean_propensity",
            "expected_buyers",
            "high_risk_users",
            "goal",
        ],
        "at_risk_customers": [
            "rank",
            "user_id",
            "segment",
            "risk_tier",
            "churn_risk",
            "value",
            "value_at_risk",
            "last_purchase",
            "favourite_category",
            "top_recommendation_title",
            "top_recommendation_reason",
        ],
        "product_health": [
            "item_id",
            "title",
            "category",
            "health",
            "flags",
            "units_7d",
            "units_7d_change",
            "forecast_units",
            "gap_pct",
            "feedback",
            "negative_share",
            "top_complaint",
        ],
        "campaign_briefs": [
            "segment",
            "audience",
            "goal",
            "headline",
            "message",
            "top_items",
            "customer_words",
            "send_time",
        ],
        "kpi_daily": [
            "day",
            "active_users",
            "buyers",
            "new_buyers",
            "orders",
            "revenue",
            "conversion",
            "average_order_value",
            "returns",
            "feedback",
            "mean_rating",
            "negative_feedback_share",
        ],
    }
    health = frames.get("product_health")
    if health is not None:
        # Those needing a look first, biggest sellers first within each.
        order = {"act": 0, "watch": 1, "ok": 2}
        health = (
            health.with_columns(
                pl.col("health").replace_strict(order, return_dtype=pl.Int8).alias("_o")
            )
            .sort(["_o", "revenue_7d", "item_id"], descending=[False, True, False])
            .drop("_o")
        )
    limits = {"kpi_daily": 14, "at_risk_customers": 25, "product_health": 30}
    # Every section asks for its table and chart by name: a missing one is None, not an error.
    tables: dict[str, Any] = dict.fromkeys(columns)
    for name, frame in frames.items():
        # health is this very frame, sorted above (never None when the frame is there)
        listed = health if name == "product_health" and health is not None else frame
        if name == "kpi_daily":
            listed = frame.reverse()
        tables[name] = table_html(listed, columns[name], limits.get(name, 50))
    return env.get_template("page").render(
        run_date=run_date,
        as_of=inputs.as_of,
        timezone=timezone,
        story=story,
        tiles=tiles,
        charts=dict.fromkeys(CHARTS) | charts(frames, inputs),
        tables=tables,
        missing=missing,
        banner=banner or Banner({}, {}, {}),
        verdicts=model_verdicts(inputs),
        health=model_health_view(inputs),
        models={
            t: frame["model_version"].first()
            for t, frame in inputs.predictions.items()
            if "model_version" in frame.columns and frame.height
        },
    )
