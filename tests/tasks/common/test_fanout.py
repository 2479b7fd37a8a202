"""Fan-out of units of work: every kind gives the results in the pieces' order."""

from __future__ import annotations

import operator
from collections.abc import Iterator

import pytest

from nightowl.tasks.common.fanout import KINDS, Fanout


@pytest.mark.parametrize("kind", ["serial", "threads", "processes"])
def test_every_local_kind_returns_the_results_in_the_pieces_order(kind):
    pieces = [5, -3, 0, 8, -1, 2, 9]
    assert list(Fanout(kind, workers=2).map(operator.neg, pieces)) == [-p for p in pieces]


def test_a_dask_cluster_returns_the_results_in_the_pieces_order(dask_cluster):
    fanout = Fanout("dask", dask_address=dask_cluster)
    assert list(fanout.map(operator.neg, range(9))) == [-p for p in range(9)]


def test_at_most_in_flight_pieces_are_taken_before_the_first_result_is_given():
    taken = []

    def pieces() -> Iterator[int]:
        for p in range(20):
            taken.append(p)
            yield p

    results = Fanout("threads", workers=2).map(operator.neg, pieces())
    assert next(results) == 0
    assert len(taken) == Fanout("threads", workers=2).in_flight  # 4, not 20
    assert list(results) == [-p for p in range(1, 20)]


def test_auto_is_serial_off_a_dask_worker_and_kinds_are_checked():
    assert Fanout().resolved() == "serial"
    assert set(KINDS) == {"auto", "serial", "threads", "processes", "dask"}
    with pytest.raises(ValueError, match="unknown fan-out kind 'gpu'"):
        list(Fanout("gpu", workers=1).map(operator.neg, [1]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[runner\] kind = 'dask'"):
        list(Fanout("dask").map(operator.neg, [1]))
