"""The nightly flow's step graph, declared once: each step's name, group, what it reads, whether
it trains a model.

Everything else comes from it: the flow's wiring (flows/nightly.py), the downstream rule that
``--force-steps`` and a rerun follow (:func:`forced_steps`), and the step groups of the run
summary. Kept free of Prefect so the command line can check step names before Prefect is
configured.

Step runs are ``<step>-<source>`` for the per-source steps (``ingest-events``) and the bare step
name for the others (``features``, ``train``, ``score``, ``price-position``, ``train-demand``,
``forecast``, ``train-sentiment``, ``feedback``, ``product-sentiment``, ``support-queue``,
``train-recommender``, ``recommend``, ``model-health``, ``report``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nightowl.schemas.landing import SOURCES

#: Steps that run once per source, in order: each reads the one before it.
PER_SOURCE = ("ingest", "clean")
#: The clean tables the user features read.
FEATURE_SOURCES = ("events", "items", "market_prices", "feedback")
#: The tables the market steps read.
MARKET_SOURCES = ("events", "items", "market_prices", "market_indicators")
#: The clean tables the recommendation steps read.
RECOMMEND_SOURCES = ("events", "items", "market_prices")
#: The clean tables the report reads itself (the rest it reads through the prediction tables).
REPORT_SOURCES = ("events", "items")

#: The prediction steps whose served nights the model-health step judges (and drift it watches).
HEALTH_READS = ("score", "forecast", "feedback", "recommend")

#: What a step is handed as its first input after the settings: tonight's ``as_of`` (the day
#: after the run date) for the steps that publish a partition, or the run date itself for
#: the training steps (the last day they may learn from) and the report.
Day = Literal["as_of", "run_date"]


def clean(*sources: str) -> tuple[str, ...]:
    """The clean step runs of ``sources``."""
    return tuple(f"clean-{source}" for source in sources)


@dataclass(frozen=True)
class StepSpec:
    """One step that runs once a night, after the per-source steps."""

    name: str
    #: Its group in the run summary.
    group: str
    #: The step runs whose outputs it reads: it waits for them, and recomputing one of them
    #: recomputes it.
    reads: tuple[str, ...] = ()
    #: Which of ``reads`` it is handed, in order, after its day; ``"clean"`` hands the reports
    #: of all its clean reads as one list. The other reads it only waits for.
    takes: tuple[str, ...] = ("clean",)
    #: Reads it runs without when they fail: what they publish from an earlier night (a
    #: champion model, yesterday's scores) serves. A failed read of any other kind skips it.
    optional: tuple[str, ...] = ()
    #: A training step: trains when due, or when named in ``--force-steps``; never cached.
    trains: bool = False
    #: Runs after every other step, with what they produced, and is told which failed.
    last: bool = False

    @property
    def day(self) -> Day:
        return "run_date" if self.trains or self.last else "as_of"

    def handed(self) -> list[str | list[str]]:
        """The reads it is handed, in order: a step run, or the list of its clean reads."""
        cleaned = [r for r in self.reads if r.startswith("clean-")]
        return [cleaned if taken == "clean" else taken for taken in self.takes]

    def needs(self) -> tuple[str, ...]:
        """The reads it is not handed but needs to have succeeded."""
        if self.last:
            return ()
        handed = {r for h in self.handed() for r in ([h] if isinstance(h, str) else h)}
        return tuple(r for r in self.reads if r not in handed and r not in self.optional)


NIGHT: tuple[StepSpec, ...] = (
    StepSpec("features", "models", clean(*FEATURE_SOURCES)),
    StepSpec("train", "models", ("features",), takes=("features",), trains=True),
    # A failed training leaves the champion in place: tonight's scores still come out.
    StepSpec("score", "models", ("features", "train"), ("features",), optional=("train",)),
    StepSpec("price-position", "market", clean(*MARKET_SOURCES)),
    StepSpec("train-demand", "market", clean(*MARKET_SOURCES), trains=True),
    StepSpec(
        "forecast", "market", (*clean(*MARKET_SOURCES), "train-demand"), optional=("train-demand",)
    ),
    StepSpec("train-sentiment", "feedback-models", clean("feedback"), trains=True),
    # A failed training leaves the champion (or the lexicon) in place: scores still come out.
    StepSpec(
        "feedback",
        "feedback-models",
        (*clean("feedback"), "train-sentiment"),
        optional=("train-sentiment",),
    ),
    # items: the categories of product_sentiment.
    StepSpec("product-sentiment", "feedback-models", ("feedback", "clean-items"), ("feedback",)),
    # High-value customers come from the newest user_scores.
    StepSpec(
        "support-queue",
        "feedback-models",
        ("feedback", "score"),
        ("feedback",),
        optional=("score",),
    ),
    StepSpec("train-recommender", "recommendations", clean(*RECOMMEND_SOURCES), trains=True),
    # A failed training leaves the champion (or the heuristic) in place: lists still come out.
    StepSpec(
        "recommend",
        "recommendations",
        (*clean(*RECOMMEND_SOURCES), "train-recommender"),
        optional=("train-recommender",),
    ),
    # Judges earlier nights' predictions against tonight's outcomes: whichever of tonight's
    # prediction steps failed, the others' nights are still judged.
    StepSpec(
        "model-health",
        "health",
        (*clean("events", "feedback"), *HEALTH_READS),
        takes=(),
        optional=HEALTH_READS,
    ),
    StepSpec(
        "report",
        "report",
        (
            *clean(*REPORT_SOURCES),
            "score",
            "price-position",
            "forecast",
            "feedback",
            "product-sentiment",
            "recommend",
            "model-health",
        ),
        takes=(),
        last=True,
    ),
)
SPECS = {spec.name: spec for spec in NIGHT}
#: The step groups that run once a night, in graph order (the others are sources).
NIGHT_GROUPS = tuple(dict.fromkeys(spec.group for spec in NIGHT))


def group_steps(group: str) -> tuple[str, ...]:
    """The steps of one group, in graph order."""
    return tuple(spec.name for spec in NIGHT if spec.group == group)


MODEL_STEPS = group_steps("models")
MARKET_STEPS = group_steps("market")
FEEDBACK_STEPS = group_steps("feedback-models")
RECOMMEND_STEPS = group_steps("recommendations")
HEALTH_STEPS = group_steps("health")
REPORT_STEPS = group_steps("report")


def _check(graph: tuple[StepSpec, ...]) -> None:
    """Every read names a step run that comes earlier in the graph (so the graph has no cycle)."""
    known = {f"{step}-{source}" for step in PER_SOURCE for source in SOURCES}
    for spec in graph:
        for read in spec.reads:
            if read not in known:
                raise ValueError(f"step {spec.name} reads {read!r}, not an earlier step run")
        for named in (*spec.takes, *spec.optional):
            if named != "clean" and named not in spec.reads:
                raise ValueError(f"step {spec.name} names {named!r}, which it does not read")
        known.add(spec.name)


_check(NIGHT)


def _downstream(run: str) -> list[str]:
    """The step runs that read the output of ``run``."""
    step, _, source = run.partition("-")
    if step == "ingest" and source in SOURCES:
        return [f"clean-{source}"]
    return [spec.name for spec in NIGHT if run in spec.reads]


def all_runs() -> list[str]:
    """Every step run of a nightly flow, in graph order."""
    return [f"{s}-{src}" for s in PER_SOURCE for src in SOURCES] + [s.name for s in NIGHT]


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
