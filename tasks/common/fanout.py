"""Fan-out of a step's units of work (its user buckets): one after another, in local threads or
processes, or over the workers of the Dask cluster the step runs on.

A unit is a picklable function applied to a picklable piece of input. Results come back in the
order of the pieces, whoever ran them, so a step's output does not depend on where its units ran;
at most ``in_flight`` pieces are out at once, so the driver's memory stays bounded too.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Kind = Literal["auto", "serial", "threads", "processes", "dask"]
KINDS: tuple[str, ...] = ("auto", "serial", "threads", "processes", "dask")


class _Future(Protocol):
    def result(self) -> Any: ...


def on_dask_worker() -> bool:
    """Whether this code runs inside a task on a Dask worker."""
    if "distributed" not in sys.modules:
        # A Dask worker has imported it; importing it here would start its threads and exit
        # hooks in every process that only asks.
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Fanout:
    """Where a step's units run. ``auto``: over the Dask cluster when the step itself runs on a
    Dask worker, else one after another (Polars already uses every core of one machine)."""

    kind: Kind = "auto"
    workers: int | None = None
    dask_address: str | None = None

    def resolved(self) -> str:
        """The kind ``auto`` stands for here."""
        if self.kind != "auto":
            return self.kind
        return "dask" if on_dask_worker() else "serial"

    @property
    def in_flight(self) -> int:
        """Pieces out at once: two per worker, so a worker never waits for its next piece."""
        return 2 * (self.workers or os.cpu_count() or 1)

    def map(self, fn: Callable[[T], R], pieces: Iterable[T]) -> Iterator[R]:
        """``fn`` of every piece, in the pieces' order."""
        kind = self.resolved()
        if kind == "serial":
            yield from map(fn, pieces)
        elif kind == "dask":
            with _dask_client(self.dask_address) as client:
                yield from _ordered(
                    lambda piece: client.submit(fn, client.scatter(piece), pure=False),
                    pieces,
                    self.in_flight,
                )
        else:
            with _pool(kind, self.workers) as pool:
                yield from _ordered(lambda piece: pool.submit(fn, piece), pieces, self.in_flight)


def _ordered(submit: Callable[[T], _Future], pieces: Iterable[T], in_flight: int) -> Iterator[Any]:
    """The results of ``submit``-ted pieces in order, with at most ``in_flight`` outstanding."""
    waiting: deque[_Future] = deque()
    for piece in pieces:
        waiting.append(submit(piece))
        if len(waiting) >= in_flight:
            yield waiting.popleft().result()
    while waiting:
        yield waiting.popleft().result()


def _pool(kind: str, workers: int | None) -> Executor:
    if kind == "threads":
        return ThreadPoolExecutor(workers)
    if kind == "processes":
        # Not fork: Polars' and ONNX Runtime's thread pools do not survive it.
        return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    raise ValueError(f"unknown fan-out kind {kind!r}: expected one of {', '.join(KINDS)}")


@contextmanager
def _dask_client(address: str | None) -> Iterator[Any]:
    from distributed import Client, worker_client

    if on_dask_worker():
        # Seceding frees this worker's slot while the step waits: its own units may run there.
        with worker_client() as client:
            yield client
        return
    if address is None:
        raise ValueError(
            "fan-out over Dask needs the step to run on a Dask worker ([runner] kind = 'dask') "
            "or a scheduler address ([runner] dask_address)"
        )
    with Client(address) as client:
        yield client
