"""The evaluate flow: each model's rolling-origin backtest beside its simple rules (a task per
model, run side by side), then one ``model_evaluation`` partition with all their figures."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# real annotations.
import logging
import time
from datetime import date
from pathlib import Path

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from nightowl.errors import NotEnoughHistory
from nightowl.flows.nightly import model_context
from nightowl.flows.settings import load_settings
from nightowl.flows.steps import ModelContext
from nightowl.tasks.common.deadline import time_limit
from nightowl.tasks.evaluate import units

log = logging.getLogger("nightowl")

#: What `nightowl evaluate` can evaluate.
MODELS = units.MODELS


@task(name="backtest", task_run_name="backtest-{model}", cache_policy=NO_CACHE)
def backtest_step(
    ctx: ModelContext, model: str, last_day: date, origins: int
) -> pl.DataFrame | str:
    """``model``'s figures at ``origins`` origins, or why the warehouse cannot judge it yet."""
    section = getattr(ctx, units.BACKTESTS[model][1])
    with time_limit(ctx.timeout_seconds, f"backtest-{model}"):
        try:
            return units.evaluation_rows(
                ctx.warehouse(), model, last_day, section, origins, ctx.evaluate.origin_step_days
            )
        except NotEnoughHistory as exc:
            log.warning("%s not evaluated: %s", model, exc)
            return str(exc)


@flow(name="nightowl-evaluate", flow_run_name="evaluate-{last_day}")
def evaluate(
    last_day: date | None = None,
    config: str | None = None,
    data_root: str | None = None,
    models: list[str] | None = None,
    origins: int | None = None,
) -> dict:
    """Backtest ``models`` (default: all) at ``origins`` past origins (default: the settings')
    on data up to ``last_day`` (default: yesterday), each beside its simple rules, and publish
    the figures to ``model_evaluation``. Returns the evaluation's report."""
    started = time.perf_counter()
    settings = load_settings(Path(config) if config else None, data_root=data_root)
    last_day = last_day or settings.yesterday()
    ctx = model_context(settings)
    n = origins or settings.evaluate.origins
    wanted = [m for m in MODELS if m in (models or MODELS)]
    futures = {m: backtest_step.submit(ctx, m, last_day, n) for m in wanted}
    parts, skipped = [], {}
    for name, future in futures.items():
        result = future.result()
        if isinstance(result, str):
            skipped[name] = result
        else:
            parts.append(result)
    report = units.publish_evaluation(
        ctx.warehouse(), last_day, parts, skipped, n, started, settings.evaluate.margin
    )
    return report.model_dump(mode="json")
