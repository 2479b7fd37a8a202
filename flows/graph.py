"""The nightly flow's step graph: which steps read which, for forced recomputes and reruns.

Kept free of Prefect so the command line can check step names before Prefect is configured.
"""

from __future__ import annotations

from schemas.landing import SOURCES

#: Each step and the steps that read its output.
DOWNSTREAM = {"ingest": ("clean",), "clean": ()}


def forced_steps(names: list[str] | None) -> set[str]:
    """Step runs (``ingest-events``…) to recompute: the named ones and everything downstream.

    A name is a step (``ingest``: every source), a step run (``clean-items``) or ``all``.
    """
    runs = {f"{step}-{source}" for step in DOWNSTREAM for source in SOURCES}
    forced: set[str] = set()
    for name in (n.strip() for n in names or [] if n.strip()):
        if name == "all":
            return runs
        step, dash, source = name.partition("-")
        if step not in DOWNSTREAM or (dash and f"{step}-{source}" not in runs):
            valid = ", ".join(["all", *DOWNSTREAM, *sorted(runs)])
            raise ValueError(f"unknown step {name!r}; expected one of: {valid}")
        sources = [source] if source else list(SOURCES)
        todo = [step]
        while todo:
            current = todo.pop()
            forced |= {f"{current}-{s}" for s in sources}
            todo.extend(DOWNSTREAM[current])
    return forced
