"""Tonight's steps on Prefect: each one is submitted once the steps it reads have settled.

Prefect, left to itself, starts every submitted task and leaves one whose input failed "NotReady"
under a generated name (``clean-6c8``), logged as an ERROR that names the failed input by its id.
Here a step whose input failed, or was itself skipped, is not run: it gets a task run of its own
name in a ``Skipped`` state and one WARNING naming the failed step it could not do without. The
only ERROR lines of a night are then its real failures.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.states import Completed, State
from prefect.utilities.annotations import allow_failure

#: The state of a step that did not run because a step it reads failed.
SKIPPED = "Skipped"


@dataclass(eq=False)
class Step:
    """One step of tonight's graph: a Prefect task and its arguments, some of them other steps."""

    name: str  # its task run's name, as the UI shows it
    task: Task
    args: tuple
    kwargs: dict
    after: tuple[Step, ...] = ()  # steps it runs after, whether they succeed or not
    future: PrefectFuture | None = None
    #: The failed step this one could not run without (None: it ran, or has not yet).
    skipped_for: str | None = None
    needs: list[Step] = field(default_factory=list)

    #: Its task run has finished (its future has its final state).
    done: bool = False

    @property
    def settled(self) -> bool:
        return self.done or self.skipped_for is not None

    @property
    def failed(self) -> bool:
        return self.done and self.state is not None and not self.state.is_completed()

    @property
    def state(self) -> State | None:
        return self.future.state if self.future is not None else None


class SoFar:
    """An argument that becomes, when its step is submitted, what went wrong tonight so far:
    ``{step: "failed: …" or "skipped: … failed"}`` (the report's banner)."""


@task(name="skipped", cache_policy=NO_CACHE)
def _skipped(step: str, failed: str) -> State:
    """Stand in, under the step's own name, for a step whose input failed."""
    get_run_logger().warning("%s skipped: %s failed", step, failed)
    return Completed(name=SKIPPED, message=f"{failed} failed")


def _steps_in(value: Any) -> list[Step]:
    if isinstance(value, Step):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _steps_in(v)]
    return []


def _run_name(task_: Task, args: tuple, kwargs: dict) -> str:
    """The name Prefect will give the task run: its template, filled from the arguments."""
    template = task_.task_run_name
    if not isinstance(template, str):
        return task_.name
    bound = inspect.signature(task_.fn).bind_partial(*args, **kwargs).arguments
    return template.format(**bound)


class Night:
    """Tonight's steps, declared in any order that respects their inputs, then run."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(
        self,
        task_: Task,
        *args: Any,
        after: tuple[Step, ...] = (),
        needs: tuple[Step, ...] = (),
        **kwargs: Any,
    ) -> Step:
        """Declare a step: ``task_`` called with ``args`` and ``kwargs``, where a Step stands
        for its result (it must succeed); ``needs`` lists steps it is not handed but must
        succeed, ``after`` steps that only go first."""
        step = Step(_run_name(task_, args, kwargs), task_, args, kwargs, tuple(after))
        step.needs = _steps_in([*args, *kwargs.values(), *needs])
        self.steps.append(step)
        return step

    def run(self) -> None:
        """Submit every step once what it reads has settled; skip those whose inputs failed."""
        waiting = list(self.steps)
        running: dict[PrefectFuture, Step] = {}
        while waiting or running:
            ready = [s for s in waiting if all(u.settled for u in (*s.needs, *s.after))]
            for step in ready:
                waiting.remove(step)
                self._start(step)
                if step.future is not None:
                    running[step.future] = step
            if ready:
                continue  # a skipped step may have settled others: look again before waiting
            if not running:  # a cycle: not possible for steps declared after their inputs
                raise RuntimeError(f"steps wait on each other: {[s.name for s in waiting]}")
            first = next(as_completed(list(running)))
            # Every step finished by now, not only the first to say so: what they unblock is then
            # submitted in the order the flow declared it.
            for future in list(running):
                future.wait(None if future is first else 0)  # keeps the final state on it
                if future is first or future.state.is_final():
                    running.pop(future).done = True

    def _start(self, step: Step) -> None:
        blocked = next((u for u in step.needs if u.failed or u.skipped_for), None)
        if blocked is not None:
            step.skipped_for = blocked.skipped_for or blocked.name
            _skipped.with_options(task_run_name=step.name)(step.name, step.skipped_for)
            return
        args = [self._value(a) for a in step.args]
        kwargs = {k: self._value(v) for k, v in step.kwargs.items()}
        after = [allow_failure(u.future) for u in step.after if u.future is not None]
        step.future = step.task.submit(*args, wait_for=after, **kwargs)

    def _value(self, value: Any) -> Any:
        if isinstance(value, Step):
            return value.future
        if isinstance(value, SoFar):
            return self.problems()
        if isinstance(value, list):
            return [self._value(v) for v in value]
        return value

    def problems(self) -> dict[str, str]:
        """What went wrong so far, per step run: ``failed: <why>`` or ``skipped: <step> failed``."""
        found = {}
        for step in self.steps:
            if step.skipped_for is not None:
                found[step.name] = f"skipped: {step.skipped_for} failed"
            elif step.failed:
                found[step.name] = f"failed: {why_failed(step.state)}"
        return found


def why_failed(state: State | None) -> str:
    """A failed state's message without Prefect's preamble."""
    if state is None:
        return "it never started"
    said = state.message or state.name or state.type.value
    return said.removeprefix("Task run encountered an exception ")
