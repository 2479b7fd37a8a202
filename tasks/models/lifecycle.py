"""The life of a model in the registry, shared by the four models: when it is due for training,
what a training did, and what serving asks of a champion."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pydantic import BaseModel, Field

from nightowl.errors import NightowlError
from nightowl.warehouse.registry import ModelCard, Registry


class NoChampion(NightowlError, RuntimeError):
    """Scoring was asked for before any model passed the parity gate and was promoted."""


class TrainOutcome(BaseModel):
    """What a train step did, for any model: trained or not, registered, promoted, and why."""

    trained: bool
    reason: str
    version: str | None = None
    promoted: bool = False
    champion: str | None = None
    metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    parity_max_diff: float | None = None
    seconds: float = 0.0


def cadence_due(
    registry: Registry,
    model: str,
    last_day: date,
    horizon_days: int,
    every_days: int,
    serves: Callable[[ModelCard], bool] | None = None,
) -> str | None:
    """Why ``model`` should be trained with data up to ``last_day``, by its registry alone: no
    champion, a champion for another horizon, no version that ``serves`` the night after
    ``last_day`` (a backfill of days before the first model; default: trained on data up to
    ``last_day`` only), or a newest such version ``every_days`` old."""
    champion = registry.champion(model)
    if champion is None:
        return "no champion yet"
    card = registry.card(model, champion.version)
    if card.training["horizon_days"] != horizon_days:
        return (
            f"champion {champion.version} looks {card.training['horizon_days']} days ahead; "
            f"horizon_days is now {horizon_days}"
        )
    # From the newest attempt, champion or not: a challenger that lost is not retried nightly.
    serves = serves or (lambda c: date.fromisoformat(c.training["last_day"]) <= last_day)
    usable = [c for c in registry.versions(model) if serves(c)]
    if not usable:
        return f"every {model} model saw data after {last_day}: none may serve the night after it"
    newest = max(date.fromisoformat(c.training["last_day"]) for c in usable)
    age = (last_day - newest).days
    if age >= every_days:
        return f"the newest {model} model is {age} days old (retrain_every_days = {every_days})"
    return None
