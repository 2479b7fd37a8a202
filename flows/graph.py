"""The nightly flow's step graph: which steps read which, for forced recomputes and reruns.

Kept free of Prefect so the command line can check step names before Prefect is configured.
Step runs are ``<step>-<source>`` for the per-source steps (``ingest-events``) and the bare step
name for the model steps (``features``, ``train``, ``score``).
"""

from __future__ import annotations

from schemas.landing import SOURCES

#: Steps that run once per source.
PER_SOURCE = ("ingest", "clean")
#: Steps that run once per night, after the per-source ones.
MODEL_STEPS = ("features", "train", "score")
#: The clean tables the user features read.
FEATURE_SOURCES = ("events", "items", "market_prices")


def _downstream(run: str) -> list[str]:
    """The step runs that read the output of ``run``."""
    step, _, source = run.partition("-")
    if step == "ingest":
        return [f"clean-{source}"]
    if step == "clean":
        return ["features"] if source in FEATURE_SOURCES else []
    return {"features": ["train", "score"], "train": ["score"]}.get(run, [])


def all_runs() -> list[str]:
    """Every step run of a nightly flow, in graph order."""
    return [f"{s}-{src}" for s in PER_SOURCE for src in SOURCES] + list(MODEL_STEPS)


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
