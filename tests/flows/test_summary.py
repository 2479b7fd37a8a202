"""The run summary's rows and page, from a literal flow summary."""

from __future__ import annotations

from nightowl.flows.summary import (
    health_notes,
    rule_notes,
    scoring_paths,
    summary_markdown,
    summary_rows,
)

SUMMARY = {
    "events": {
        "ingest": {
            "newly_ingested": ["2026-11-27.csv"],
            "seconds": 1.5,
            "files": [{"rows_read": 10, "rows_accepted": 8, "rows_quarantined": 2}],
        },
        "clean": {
            "rows_in": 8,
            "rows_out": 6,
            "duplicates": 1,
            "future": 1,
            "partitions": {"2026-11-26": "h1", "2026-11-27": "h2"},
            "seconds": 0.5,
        },
    }
}


def test_one_row_per_step_with_counts_that_add_up():
    ingest, clean = summary_rows(SUMMARY)
    assert ingest == {
        "step": "ingest-events", "files": 1, "rows_in": 10, "rows_out": 8, "quarantined": 2,
        "partitions": 1, "seconds": 1.5,
    }  # fmt: skip
    assert clean["rows_in"] == ingest["rows_out"] and clean["quarantined"] == 2
    assert clean["partitions"] == 2


def test_the_page_has_the_table_totals_and_a_query():
    page = summary_markdown("2026-11-27", summary_rows(SUMMARY), "/data/warehouse")
    assert "| ingest-events | 1 | 10 | 8 | 2 | 1 | 1.5 |" in page
    assert "Quarantined rows in total: **4**" in page
    assert "where dt = '2026-11-27'" in page and "/data/warehouse/clean/" in page


MODELS = {
    "features": {"rows": 40, "seconds": 0.2},
    "train": {"trained": False, "reason": "champion v1 is fresh", "seconds": 0.0},
    "score": {"rows": 40, "seconds": 0.1},
}


def test_model_steps_get_rows_and_the_page_says_how_to_read_the_scores():
    rows = summary_rows(SUMMARY | {"models": MODELS})
    by_step = {r["step"]: r for r in rows}
    assert by_step["features-user"]["rows_out"] == 40 and by_step["score-users"]["rows_out"] == 40
    assert by_step["train-propensity"]["rows_out"] == 0  # nothing trained tonight
    page = summary_markdown("2026-11-27", rows, "/data/warehouse")
    assert "from user_scores" in page
    assert "from user_scores" not in summary_markdown("2026-11-27", summary_rows(SUMMARY), "/w")


def test_a_night_without_scores_has_no_score_row():
    rows = summary_rows(SUMMARY | {"models": {"features": None, "train": None, "score": None}})
    assert [r["step"] for r in rows] == ["ingest-events", "clean-events"]


def test_the_page_says_which_graph_and_provider_scored():
    gpu = {"rows": 40, "seconds": 0.1, "provider": "CUDAExecutionProvider", "graph": "tensorised"}
    summary = SUMMARY | {
        "models": MODELS | {"score": gpu},
        "market": {"forecast": {"rows": 7, "seconds": 0.1, "provider": "CPUExecutionProvider"}},
        "recommendations": {"recommend": {"rows": 3, "seconds": 0.1,
                                          "notes": {"provider": "none", "graph": "none"}}},
    }  # fmt: skip
    paths = scoring_paths(summary)
    assert paths == {
        "score-users": "tensorised on CUDAExecutionProvider",
        "forecast": "tree_ensemble on CPUExecutionProvider",  # a report from before #9
    }  # the heuristic recommender ran no model
    page = summary_markdown("2026-11-27", summary_rows(summary), "/w", scoring=paths)
    assert (
        "Scoring: score-users tensorised on CUDAExecutionProvider; forecast tree_ensemble" in page
    )
    assert "Scoring:" not in summary_markdown("2026-11-27", summary_rows(SUMMARY), "/w")


def test_tables_served_by_a_simple_rule_are_said_and_not_listed_as_scored():
    summary = {
        "models": {
            "score": {"table": "user_scores", "model_version": "rule:rfm@2026-11-27-abc",
                      "provider": "polars", "graph": "rule", "rows": 3, "seconds": 0.1},
        },
        "recommendations": {
            "recommend": {"table": "recommendations", "model_version": "2026-11-27-def",
                          "rows": 30, "seconds": 1.0, "notes": {"provider": "CPUExecutionProvider",
                                                                "graph": "tree_ensemble"}},
        },
    }  # fmt: skip
    assert rule_notes(summary) == [
        "user_scores: served by the simple rule rfm; model 2026-11-27-abc did not beat it on "
        "held-out data (nightowl models, nightowl evaluate)"
    ]
    assert scoring_paths(summary) == {"recommend": "tree_ensemble on CPUExecutionProvider"}


def test_model_health_gets_a_row_and_its_alerts_are_said():
    judged = {
        "judged": {"2026-10-01": ["churn", "propensity"]},
        "rows": 40,
        "drift_rows": 70,
        "seconds": 1.25,
        "alerts": ["propensity: 1 column(s) drifted from the champion's training data (…)"],
    }
    summary = {"health": {"model-health": judged}}
    (row,) = summary_rows(summary)
    assert (row["step"], row["rows_out"], row["partitions"], row["seconds"]) == (
        "model-health", 110, 2, 1.25,
    )  # fmt: skip
    assert health_notes(summary) == [f"model health: {judged['alerts'][0]}"]
    assert health_notes(SUMMARY) == []
