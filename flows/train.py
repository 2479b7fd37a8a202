"""The train flow: the propensity model (user features, time-split snapshots), the demand model
(rolling-origin backtest), the sentiment model (newest ratings held out) and the recommender (a
later window's purchases held out), each registered only after its parity check."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# real annotations.
from datetime import date, timedelta
from pathlib import Path

from prefect import flow

from nightowl.flows.nightly import model_context
from nightowl.flows.settings import load_settings
from nightowl.flows.steps import (
    features_step,
    train_demand_step,
    train_recommender_step,
    train_sentiment_step,
    train_step,
)

#: What `nightowl train` can train.
MODELS = ("propensity", "demand", "sentiment", "recommender")


@flow(name="nightowl-train", flow_run_name="train-{last_day}", persist_result=True)
def train(
    last_day: date | None = None,
    config: str | None = None,
    data_root: str | None = None,
    models: list[str] | None = None,
) -> dict[str, dict]:
    """Train ``models`` (default: all) on data up to ``last_day`` (default: yesterday), whether or
    not their champions are due; register each that passes its parity gate, promote it if it is
    at least as good as its champion. Returns each model's training report."""
    settings = load_settings(Path(config) if config else None, data_root=data_root)
    last_day = last_day or settings.yesterday()
    ctx = model_context(settings)
    wanted = models or list(MODELS)
    futures = {}
    if "propensity" in wanted:
        features = features_step.submit(ctx, last_day + timedelta(days=1), [])
        # A future stands for its result (Prefect resolves it), which its types cannot say.
        futures["propensity"] = train_step.submit(ctx, last_day, features, force=True)  # type: ignore[call-overload]
    if "demand" in wanted:
        futures["demand"] = train_demand_step.submit(ctx, last_day, [], force=True)
    if "sentiment" in wanted:
        futures["sentiment"] = train_sentiment_step.submit(ctx, last_day, [], force=True)
    if "recommender" in wanted:
        futures["recommender"] = train_recommender_step.submit(ctx, last_day, [], force=True)
    return {name: f.result().model_dump(mode="json") for name, f in futures.items()}
