"""Which step runs a --force-steps list recomputes: the named ones and everything downstream."""

from __future__ import annotations

import pytest

from flows.graph import forced_steps
from schemas.landing import SOURCES


def test_nothing_forced_by_default():
    assert forced_steps(None) == set() and forced_steps([]) == set()


def test_a_step_run_forces_itself_and_its_downstream():
    assert forced_steps(["ingest-events"]) == {"ingest-events", "clean-events"}
    assert forced_steps(["clean-items"]) == {"clean-items"}


def test_a_step_forces_every_source():
    assert forced_steps(["clean"]) == {f"clean-{s}" for s in SOURCES}
    assert len(forced_steps(["ingest"])) == 2 * len(SOURCES)
    assert forced_steps(["all"]) == forced_steps(["ingest"])


@pytest.mark.parametrize("name", ["train", "ingest-clicks", "clean-"])
def test_unknown_names_list_the_valid_ones(name):
    with pytest.raises(ValueError, match="expected one of: all, ingest, clean"):
        forced_steps([name])
