"""The train flow: user features, then a time-split training that registers a checked model."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# real annotations.
from datetime import date, timedelta
from pathlib import Path

from prefect import flow

from flows.nightly import model_context
from flows.settings import load_settings
from tasks.steps import features_step, train_step


@flow(name="nightowl-train", flow_run_name="train-{last_day}", persist_result=True)
def train(
    last_day: date | None = None, config: str | None = None, data_root: str | None = None
) -> dict:
    """Train the propensity model on data up to ``last_day`` (default: yesterday), whether or not
    the champion is due; register it if it passes the parity gate, promote it if it is as good."""
    settings = load_settings(Path(config) if config else None, data_root=data_root)
    last_day = last_day or settings.yesterday()
    ctx = model_context(settings)
    features = features_step.submit(ctx, last_day + timedelta(days=1), [])
    return train_step.submit(ctx, last_day, features, force=True).result().model_dump(mode="json")
