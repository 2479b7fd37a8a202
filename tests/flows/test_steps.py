"""Step options: which failures are retried, and the retry settings a flow applies."""

from __future__ import annotations

import pytest

from nightowl.flows.nightly import step_options
from nightowl.flows.settings import load_settings
from nightowl.flows.steps import retry_on_io_error
from nightowl.tasks.ingest.units import IngestFailed


class _Finished:
    """A finished task state whose result raises what the task raised."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def result(self):
        if self.error is not None:
            raise self.error
        return None


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (OSError(28, "No space left on device"), True),
        (TimeoutError(), True),  # an OSError too: a stalled mount
        (IngestFailed("events.csv: required column 'event_time' is missing"), False),
        (ValueError("bad data"), False),
        (None, False),
    ],
)
def test_only_io_errors_are_retried(error, retried):
    assert retry_on_io_error(None, None, _Finished(error)) is retried


def test_step_options_back_off(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text("[run]\nio_retries = 3\nretry_delay_seconds = 2\n")
    assert step_options(load_settings(cfg)) == {"retries": 3, "retry_delay_seconds": [2, 6, 18]}


def test_every_cached_step_says_how_to_find_its_outputs():
    """A cached result is dropped when its outputs are gone: each cached step's report type
    needs an output check, or its results would never come from the cache."""
    import typing

    from prefect.cache_policies import NO_CACHE

    from nightowl.flows import steps

    cached = [s for s in (steps.ingest_step, steps.clean_step, *steps.NIGHT_TASKS.values())]
    cached = [s for s in cached if s.cache_policy is not NO_CACHE]
    assert {s.name for s in cached} >= {"ingest", "clean", "features", "score", "report"}
    for step in cached:
        returned = typing.get_type_hints(step.fn)["return"]
        kinds = [k for k in typing.get_args(returned) or (returned,) if k is not type(None)]
        assert kinds and all(k in steps.OUTPUT_CHECKS for k in kinds), step.name


def test_a_report_of_an_unknown_kind_is_never_taken_as_still_there(tmp_path):
    from nightowl.flows.steps import _outputs_exist
    from nightowl.warehouse.store import Warehouse

    assert _outputs_exist(object(), Warehouse(tmp_path)) is False
