"""The run summary: one row per step, and the page a person reads in the Prefect UI."""

from __future__ import annotations

from typing import Any

from nightowl.flows.graph import FEEDBACK_STEPS, MARKET_STEPS, RECOMMEND_STEPS
from nightowl.warehouse.catalog import listed


def summary_rows(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step run: rows in and out, quarantined rows, partitions and seconds."""
    rows = []
    for source, reports in summary.items():
        if source == "models":
            rows += _model_rows(reports)
            continue
        if source == "market":
            rows += _market_rows(reports)
            continue
        if source == "feedback-models":
            rows += _feedback_rows(reports)
            continue
        if source == "recommendations":
            rows += _recommend_rows(reports)
            continue
        if source == "health":
            if (judged := reports.get("model-health")) is not None:
                written = len(judged["judged"]) + (1 if judged["drift_rows"] else 0)
                out = judged["rows"] + judged["drift_rows"]
                rows.append(_row("model-health", 0, out, written, judged["seconds"]))
            continue
        if source == "report":
            if (built := reports.get("report")) is not None:
                out = sum(t["rows"] for t in built["tables"].values())
                rows.append(_row("report", 0, out, len(built["tables"]), built["seconds"]))
            continue
        ingest, clean = reports.get("ingest"), reports.get("clean")
        if ingest is not None:
            files = ingest["files"]
            rows.append(
                {
                    "step": f"ingest-{source}",
                    "files": len(ingest["newly_ingested"]),
                    "rows_in": sum(f["rows_read"] for f in files),
                    "rows_out": sum(f["rows_accepted"] for f in files),
                    "quarantined": sum(f["rows_quarantined"] for f in files),
                    "partitions": 1 if files else 0,
                    "seconds": ingest.get("seconds", 0.0),
                }
            )
        if clean is not None:
            rows.append(
                {
                    "step": f"clean-{source}",
                    "files": 0,
                    "rows_in": clean["rows_in"],
                    "rows_out": clean["rows_out"],
                    "quarantined": clean["duplicates"] + clean["future"] + clean.get("outliers", 0),
                    "partitions": len(clean["partitions"]),
                    "seconds": clean.get("seconds", 0.0),
                }
            )
    return rows


def delivery_notes(summary: dict[str, dict[str, Any]]) -> list[str]:
    """What a person should know about tonight's deliveries, one line each: corrections that
    superseded earlier versions, copies skipped, and the early rows held for their day."""
    notes = []
    for reports in summary.values():
        if not isinstance(reports, dict):
            continue
        notes += (reports.get("ingest") or {}).get("notes", [])
        clean = reports.get("clean") or {}
        if clean.get("held_total"):
            days = listed(clean["held_days"])
            notes.append(f"{clean['table']}: held {clean['held_total']:,} rows (days {days})")
    return notes


def rule_notes(summary: dict[str, dict[str, Any]]) -> list[str]:
    """One line per prediction table a simple rule made tonight because its model did not beat
    it on held-out data (``model_version`` ``rule:<rule>@<version>``)."""
    notes = []
    for reports in summary.values():
        if not isinstance(reports, dict):
            continue
        for step, report in reports.items():
            version = report.get("model_version") if isinstance(report, dict) else None
            if isinstance(version, str) and version.startswith("rule:"):
                rule, _, model = version.removeprefix("rule:").partition("@")
                table = report.get("table", step)
                notes.append(
                    f"{table}: served by the simple rule {rule}; model {model} did not beat it "
                    "on held-out data (nightowl models, nightowl evaluate)"
                )
    return notes


def health_notes(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The model-health step's alerts tonight: models losing to their simple rules on matured
    outcomes, inputs or scores drifting from the champions' training data."""
    judged = (summary.get("health") or {}).get("model-health") or {}
    return [f"model health: {line}" for line in judged.get("alerts", [])]


def _model_rows(reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the model steps: users featurized, trained on and scored."""
    rows = []
    features, trained, scored = (reports.get(k) for k in ("features", "train", "score"))
    if features is not None:
        rows.append(_row("features-user", 0, features["rows"], 1, features.get("seconds", 0.0)))
    if trained is not None:
        n = 1 if trained.get("trained") else 0
        rows.append(_row("train-propensity", 0, n, 0, trained.get("seconds", 0.0)))
    if scored is not None:
        rows.append(_row("score-users", scored["rows"], scored["rows"], 1, scored["seconds"]))
    return rows


def _market_rows(reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the market steps: items positioned, the demand model, item-days forecast."""
    rows = []
    position, trained, forecast = (reports.get(k) for k in MARKET_STEPS)
    if position is not None:
        rows.append(_row("price-position", 0, position["rows"], 1, position["seconds"]))
    if trained is not None:
        n = 1 if trained.get("trained") else 0
        rows.append(_row("train-demand", 0, n, 0, trained.get("seconds", 0.0)))
    if forecast is not None:
        rows.append(_row("forecast", 0, forecast["rows"], 3, forecast["seconds"]))
    return rows


def _feedback_rows(reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the feedback steps: the sentiment model, items scored, the tables from them."""
    rows = []
    trained = reports.get("train-sentiment")
    if trained is not None:
        n = 1 if trained.get("trained") else 0
        rows.append(_row("train-sentiment", 0, n, 0, trained.get("seconds", 0.0)))
    names = {"feedback": "feedback-scores"}
    for step in FEEDBACK_STEPS[1:]:
        if (report := reports.get(step)) is not None:
            rows.append(_row(names.get(step, step), 0, report["rows"], 1, report["seconds"]))
    return rows


def _recommend_rows(reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the recommendation steps: the ranker, then candidates in and list rows out."""
    rows = []
    trained, lists = (reports.get(k) for k in RECOMMEND_STEPS)
    if trained is not None:
        n = 1 if trained.get("trained") else 0
        rows.append(_row("train-recommender", 0, n, 0, trained.get("seconds", 0.0)))
    if lists is not None:
        candidates = lists.get("notes", {}).get("candidates", 0)
        rows.append(_row("recommend", candidates, lists["rows"], 1, lists["seconds"]))
    return rows


def scoring_paths(summary: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Scoring step → the graph and execution provider that ran its model tonight."""
    reports = {
        "score-users": summary.get("models", {}).get("score"),
        "forecast": summary.get("market", {}).get("forecast"),
        "recommend": (summary.get("recommendations", {}).get("recommend") or {}).get("notes"),
    }
    return {
        step: f"{r.get('graph', 'tree_ensemble')} on {r['provider']}"
        for step, r in reports.items()
        if r and r.get("provider") not in (None, "none") and r.get("graph") != "rule"
    }


def _row(step: str, rows_in: int, rows_out: int, partitions: int, seconds: float) -> dict:
    return {
        "step": step,
        "files": 0,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "quarantined": 0,
        "partitions": partitions,
        "seconds": seconds,
    }


def _file_uri(path: str) -> str:
    from pathlib import Path

    return Path(path).as_uri()


def summary_markdown(
    run_date: str,
    rows: list[dict[str, Any]],
    warehouse: str,
    report_page: str | None = None,
    scoring: dict[str, str] | None = None,
    notes: list[str] | None = None,
) -> str:
    """A short page: what each step did, which graph and provider scored, where the outputs are
    and how to query them."""
    head = "| step | new files | rows in | rows out | quarantined | partitions | seconds |"
    lines = [
        f"# nightowl nightly run for {run_date}",
        "",
        head,
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['step']} | {r['files']:,} | {r['rows_in']:,} | {r['rows_out']:,} | "
            f"{r['quarantined']:,} | {r['partitions']:,} | {r['seconds']:.1f} |"
            for r in rows
        ),
        "",
        f"Quarantined rows in total: **{sum(r['quarantined'] for r in rows):,}**.",
        "",
        *([*(f"- {n}" for n in notes), ""] if notes else []),
        *(
            [f"Scoring: {'; '.join(f'{s} {p}' for s, p in scoring.items())}.", ""]
            if scoring
            else []
        ),
        f"Outputs: `{warehouse}/clean/<table>/dt=<date>/` (rejected rows under "
        f"`{warehouse}/quarantine/`). Query them with",
        "",
        "```",
        f"nightowl query \"select source, reason, count(*) from quarantine where dt = '{run_date}' "
        'group by all"',
        "```",
    ]
    if report_page:
        lines += ["", f"The morning report: [{report_page}]({_file_uri(report_page)})."]
    if any(r["step"] == "score-users" for r in rows):
        lines += [
            "",
            f"Scores: `{warehouse}/predictions/user_scores/as_of=<run date + 1>/`, e.g.",
            "",
            "```",
            'nightowl query "select risk_tier, count(*), avg(p_purchase_30d) from user_scores '
            'group by 1"',
            "```",
        ]
    return "\n".join(lines)
