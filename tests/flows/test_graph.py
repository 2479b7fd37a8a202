"""Which step runs a --force-steps list recomputes: the named ones and everything downstream."""

from __future__ import annotations

import pytest

from nightowl.flows.graph import (
    FEEDBACK_STEPS,
    HEALTH_STEPS,
    MARKET_STEPS,
    MODEL_STEPS,
    RECOMMEND_STEPS,
    REPORT_STEPS,
    forced_steps,
)
from nightowl.schemas.landing import SOURCES


def test_nothing_forced_by_default():
    assert forced_steps(None) == set() and forced_steps([]) == set()


def test_a_step_run_forces_itself_and_its_downstream():
    # The support queue reads tonight's user scores (high-value customers); the report reads
    # the scores, forecasts, prices, feedback and lists, and the clean events and items; the
    # model-health step tonight's predictions and outcomes (clean events and feedback).
    model = {"features", "train", "score", "support-queue", "model-health", "report"}
    market = {"price-position", "train-demand", "forecast"}
    recommend = {"train-recommender", "recommend"}
    events = {"ingest-events", "clean-events"}
    assert forced_steps(["ingest-events"]) == events | model | market | recommend
    items = {"clean-items", "product-sentiment"}
    assert forced_steps(["clean-items"]) == items | model | market | recommend
    assert forced_steps(["clean-market_prices"]) == {"clean-market_prices"} | model | market | (
        recommend
    )
    assert forced_steps(["clean-market_indicators"]) == {
        "clean-market_indicators",
        "model-health",
        "report",
    } | (market)
    assert forced_steps(["clean-feedback"]) == {"clean-feedback", *FEEDBACK_STEPS} | model


def test_model_steps_force_only_what_reads_them():
    health = {"model-health", "report"}
    assert forced_steps(["score"]) == {"score", "support-queue", *health}
    assert forced_steps(["train"]) == {"train", "score", "support-queue", *health}
    assert forced_steps(["features"]) == {"features", "train", "score", "support-queue", *health}
    assert forced_steps(["train-demand"]) == {"train-demand", "forecast", *health}
    assert forced_steps(["price-position"]) == {"price-position", "report"}
    assert forced_steps(["train-sentiment"]) == {*FEEDBACK_STEPS, *health}
    assert forced_steps(["feedback"]) == {
        "feedback",
        "product-sentiment",
        "support-queue",
        *health,
    }
    assert forced_steps(["support-queue"]) == {"support-queue"}
    assert forced_steps(["train-recommender"]) == {"train-recommender", "recommend", *health}
    assert forced_steps(["recommend"]) == {"recommend", *health}
    assert forced_steps(["model-health"]) == health
    assert forced_steps(["report"]) == {"report"}


def test_a_step_forces_every_source():
    assert {f"clean-{s}" for s in SOURCES} <= forced_steps(["clean"])
    steps = len(MODEL_STEPS) + len(MARKET_STEPS) + len(FEEDBACK_STEPS) + len(RECOMMEND_STEPS)
    steps += len(HEALTH_STEPS)
    assert len(forced_steps(["ingest"])) == 2 * len(SOURCES) + steps + len(REPORT_STEPS)
    assert forced_steps(["all"]) == forced_steps(["ingest"])


@pytest.mark.parametrize("name", ["training", "ingest-clicks", "clean-"])
def test_unknown_names_list_the_valid_ones(name):
    with pytest.raises(ValueError, match="expected one of: all, ingest, clean"):
        forced_steps([name])


def test_every_step_of_the_graph_has_a_task_that_takes_what_the_graph_hands_it():
    import inspect

    from nightowl.flows.graph import NIGHT
    from nightowl.flows.steps import NIGHT_TASKS

    assert list(NIGHT_TASKS) == [spec.name for spec in NIGHT]
    for spec in NIGHT:
        params = inspect.signature(NIGHT_TASKS[spec.name].fn).parameters
        handed = ["ctx", "day", *spec.handed()]
        extra = {"force": None} if spec.trains else {"problems": {}} if spec.last else {}
        # binds: the flow calls task(ctx, day, *handed, **extra)
        inspect.signature(NIGHT_TASKS[spec.name].fn).bind(*handed, **extra)
        assert len(params) == len(handed) + len(extra), spec.name


def test_the_graph_refuses_a_read_of_a_later_or_unknown_step():
    from nightowl.flows.graph import StepSpec, _check

    with pytest.raises(ValueError, match="reads 'score', not an earlier step run"):
        _check((StepSpec("early", "models", ("score",)), StepSpec("score", "models")))
    with pytest.raises(ValueError, match="names 'train'"):
        _check((StepSpec("score", "models", ("clean-events",), optional=("train",)),))


def test_a_step_needs_what_it_reads_but_is_not_handed_unless_it_can_do_without():
    from nightowl.flows.graph import SPECS

    assert SPECS["product-sentiment"].needs() == ("clean-items",)
    assert SPECS["support-queue"].needs() == ()  # yesterday's scores serve
    assert SPECS["score"].needs() == () and SPECS["score"].handed() == ["features"]
    assert SPECS["report"].needs() == ()  # runs last whatever failed, and says so
