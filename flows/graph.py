"""The nightly flow's step graph: which steps read which, for forced recomputes and reruns.

Kept free of Prefect so the command line can check step names before Prefect is configured.
Step runs are ``<step>-<source>`` for the per-source steps (``ingest-events``) and the bare step
name for the model steps (``features``, ``train``, ``score``) and the market steps
(``price-position``, ``train-demand``, ``forecast``), the feedback steps (``train-sentiment``,
``feedback``, ``product-sentiment``, ``support-queue``) and the recommendation steps
(``train-recommender``, ``recommend``) and the report (``report``).
"""

from __future__ import annotations

from nightowl.flows.summary import FEEDBACK_STEPS, MARKET_STEPS, RECOMMEND_STEPS, REPORT_STEPS
from nightowl.schemas.landing import SOURCES

#: Steps that run once per source.
PER_SOURCE = ("ingest", "clean")
#: Steps that run once per night, after the per-source ones.
MODEL_STEPS = ("features", "train", "score")
#: The clean tables the user features read.
FEATURE_SOURCES = ("events", "items", "market_prices", "feedback")
#: The tables the market steps read.
MARKET_SOURCES = ("events", "items", "market_prices", "market_indicators")
#: The clean tables the feedback steps read (items: the categories of product_sentiment).
FEEDBACK_SOURCES = ("feedback", "items")
#: The clean tables the recommendation steps read.
RECOMMEND_SOURCES = ("events", "items", "market_prices")
#: The clean tables the report reads itself (the rest it reads through the prediction tables).
REPORT_SOURCES = ("events", "items")


def _downstream(run: str) -> list[str]:
    """The step runs that read the output of ``run``."""
    if run in (*MODEL_STEPS, *MARKET_STEPS, *FEEDBACK_STEPS, *RECOMMEND_STEPS, *REPORT_STEPS):
        return {
            "features": ["train", "score"],
            "train": ["score"],
            # support-queue: high-value customers come from user_scores
            "score": ["support-queue", "report"],
            "price-position": ["report"],
            "train-demand": ["forecast"],
            "forecast": ["report"],
            "train-sentiment": ["feedback"],
            "feedback": ["product-sentiment", "support-queue", "report"],
            "product-sentiment": ["report"],
            "train-recommender": ["recommend"],
            "recommend": ["report"],
        }.get(run, [])
    step, _, source = run.partition("-")
    if step == "ingest":
        return [f"clean-{source}"]
    readers = []
    if source in FEATURE_SOURCES:
        readers.append("features")
    if source in MARKET_SOURCES:
        readers += ["price-position", "train-demand", "forecast"]
    if source == "feedback":
        readers += ["train-sentiment", "feedback"]
    if source == "items":
        readers.append("product-sentiment")
    if source in RECOMMEND_SOURCES:
        readers += ["train-recommender", "recommend"]
    if source in REPORT_SOURCES:
        readers.append("report")
    return readers


def all_runs() -> list[str]:
    """Every step run of a nightly flow, in graph order."""
    return [f"{s}-{src}" for s in PER_SOURCE for src in SOURCES] + [
        *MODEL_STEPS,
        *MARKET_STEPS,
        *FEEDBACK_STEPS,
        *RECOMMEND_STEPS,
        *REPORT_STEPS,
    ]


def forced_steps(names: list[str] | None) -> set[str]:
    """Step runs to recompute: the named ones and everything downstream of them.

    A name is a step (``ingest``: every source), a step run (``clean-items``) or ``all``.
    """
    runs = all_runs()
    forced: set[str] = set()
    for name in (n.strip() for n in names or [] if n.strip()):
        if name == "all":
            return set(runs)
        if name in PER_SOURCE:
            todo = [f"{name}-{source}" for source in SOURCES]
        elif name in runs:
            todo = [name]
        else:
            valid = ", ".join(["all", *PER_SOURCE, *runs])
            raise ValueError(f"unknown step {name!r}; expected one of: {valid}")
        while todo:
            current = todo.pop()
            forced.add(current)
            todo.extend(_downstream(current))
    return forced
