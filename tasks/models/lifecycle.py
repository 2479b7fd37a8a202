"""The life of a model in the registry, shared by the four models.

Every model goes the same way: trained when due (:func:`cadence_due`), exported and parity-gated
by its own code, then registered under a version named for its data and graph, challenged
against the champion on the same held-out data (:func:`challenge`), and promoted only when it
ties or beats it (:func:`admit_trained`). What differs per model is passed in: its card's
figures, what makes a comparison unfair, and how the champion scores the held-out data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from nightowl.errors import NightowlError
from nightowl.warehouse.registry import NATIVE_FILE, ModelCard, Registry


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
    #: The new version against its best simple rule (see ``ModelCard.guard``).
    guard: dict[str, Any] | None = None
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


#: A challenge's outcome: promote the new version or not, and why (said in the run summary).
Verdict = tuple[bool, str]


def settle(comparison: str, wins: bool) -> Verdict:
    """The verdict of a comparison on the same held-out data (``wins``: ties or beats)."""
    return (True, f"{comparison}: promoted") if wins else (False, f"{comparison}: champion kept")


def challenge(
    registry: Registry,
    card: ModelCard,
    duel: Callable[[ModelCard], Verdict],
    *,
    unfair: Callable[[ModelCard], Verdict | None] = lambda champion: None,
    first: str = "first model: promoted",
) -> Verdict:
    """Whether ``card`` replaces its model's champion: yes when there is none or it is the same
    version; else ``unfair`` may settle it from the champion's card (a champion for another
    horizon, or one that saw the held-out data); else ``duel`` scores both on the same data."""
    champion = registry.champion(card.model)
    if champion is None:
        return True, first + _rule_note(card)
    if champion.version == card.version:
        return True, "same model as the champion"
    old = registry.card(card.model, champion.version)
    if card.serves_rule and not old.serves_rule:
        return False, f"{guard_text(card)}; champion {old.version} did: champion kept"
    if old.serves_rule and card.guard is not None and not card.serves_rule:
        return True, f"{guard_text(card)}; champion {old.version} served its rule: promoted"
    verdict = unfair(old) or duel(old)
    return verdict[0], verdict[1] + (_rule_note(card) if verdict[0] else "")


def rule_guard(
    metrics: dict[str, dict[str, float | None]],
    metric: str,
    rules: tuple[str, ...],
    margin: float,
    *,
    lower_is_better: bool = False,
) -> dict[str, Any]:
    """A card's ``guard``: whether ``metrics["model"][metric]`` beats the best of ``rules`` on
    the same held-out data by more than ``margin`` (a missing figure never wins)."""
    sign = -1.0 if lower_is_better else 1.0
    worst = -float("inf")

    def score(name: str) -> float:
        value = metrics[name].get(metric)
        return worst if value is None else sign * value

    best = max(rules, key=score)
    return {
        "metric": metric,
        "model": metrics["model"].get(metric),
        "rule": best,
        "rule_value": metrics[best].get(metric),
        "margin": margin,
        "beats": score("model") > score(best) + margin,
    }


#: The ``graph`` recorded for predictions a simple rule served.
RULE_GRAPH = "rule"


def rule_version(card: ModelCard, rule: str | None = None) -> str:
    """What ``model_version`` says of predictions made by the simple rule a version did not
    beat: ``rule:<rule>@<version>`` (``rule``: another name for it, such as its library's)."""
    return f"rule:{rule or card.serves_rule}@{card.version}"


def guard_text(card: ModelCard) -> str:
    """Whether the version beat its best simple rule, in words with the figures."""
    guard = card.guard
    if guard is None:
        return f"{card.version} was not compared with simple rules"
    verb = "beat" if guard["beats"] else "did not beat"
    margin = f" by more than {guard['margin']:g}" if guard["margin"] else ""
    return (
        f"{card.model} {card.version} {verb} its best simple rule {guard['rule']}{margin} "
        f"(held-out {guard['metric']} {_shown(guard['model'])} vs {_shown(guard['rule_value'])})"
    )


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _rule_note(card: ModelCard) -> str:
    rule = card.serves_rule
    return "" if rule is None else f"; it serves the simple rule {rule}: {guard_text(card)}"


@dataclass(frozen=True)
class Trained:
    """A trained model, exported and past its parity gate, as the registry stores it."""

    #: The ONNX graph served on CPU (a tree ensemble, or a linear model).
    onnx: bytes
    #: The training library's own form of the model, kept beside the graph.
    native: str
    #: The graph of plain tensor operators that a GPU runs (tree models only).
    tensorised: bytes | None = None
    native_name: str = NATIVE_FILE


@dataclass(frozen=True)
class Admitted:
    """What registering a trained model came to."""

    card: ModelCard
    promoted: bool
    why: str
    #: The champion's version after it (this one when promoted).
    champion: str | None


def admit_trained(
    registry: Registry,
    model: str,
    last_day: date,
    trained: Trained,
    judge: Callable[[ModelCard], Verdict],
    **card: Any,
) -> Admitted:
    """Register ``trained`` as a version of ``model`` named for ``last_day`` and its graph, with
    a card of ``card``'s fields, and promote it when ``judge`` says so (see :func:`challenge`)."""
    version = registry.version_name(last_day.isoformat(), trained.onnx)
    model_card = ModelCard(model=model, version=version, **card)
    promoted, why = judge(model_card)
    champion = registry.admit(
        model_card,
        trained.onnx,
        trained.native,
        promote=promoted,
        reason=why,
        native_name=trained.native_name,
        tensor_bytes=trained.tensorised,
    )
    return Admitted(model_card, promoted, why, champion)


@dataclass(frozen=True)
class Figure:
    """One column of a model's versions table (``nightowl models``): a header, the value on a
    version's card, and how to write a number (None shows as ``-``)."""

    header: str
    value: Callable[[ModelCard], Any]
    fmt: str = ".4f"

    def shown(self, card: ModelCard) -> str:
        value = self.value(card)
        if value is None:
            return "-"
        return str(value) if isinstance(value, str) or not self.fmt else format(value, self.fmt)


@dataclass(frozen=True)
class VersionsView:
    """How ``nightowl models`` lists a model's versions: a title and its figures, after the
    version and the last day of data every model has."""

    title: str
    figures: tuple[Figure, ...] = ()
