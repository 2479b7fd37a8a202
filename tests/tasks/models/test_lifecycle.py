"""The model lifecycle every model shares: admit a trained version, challenge the champion."""

from __future__ import annotations

from datetime import date

import pytest

from nightowl.tasks.models.lifecycle import (
    Figure,
    Trained,
    VersionsView,
    admit_trained,
    challenge,
    settle,
)
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse

DAY = date(2026, 11, 30)


def _card(**training) -> dict:
    return {
        "code_version": "test",
        "features": [{"name": "x", "dtype": "float32"}],
        "training": {"last_day": DAY.isoformat(), **training},
        "metrics": {"model": {"auc": 0.7}},
        "parity": {"max_abs_diff": 1e-7},
        "params": {},
        "best_iteration": 3,
    }


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(Warehouse(tmp_path / "data"))


def _admit(registry: Registry, onnx: bytes, judge, **training):
    return admit_trained(registry, "m", DAY, Trained(onnx, "native"), judge, **_card(**training))


def test_the_first_version_is_promoted_and_names_itself_by_its_day_and_graph(registry):
    def duel(old):
        raise AssertionError("no champion to duel with")

    first = _admit(registry, b"graph-1", lambda card: challenge(registry, card, duel))
    assert first.promoted and first.why == "first model: promoted"
    assert first.card.version.startswith("2026-11-30-")
    assert registry.champion("m").version == first.card.version == first.champion
    # The same graph again is the same version: promoted without a duel.
    again = _admit(registry, b"graph-1", lambda card: challenge(registry, card, duel))
    assert again.card.version == first.card.version and again.why == "same model as the champion"


@pytest.mark.parametrize("wins", [True, False])
def test_a_challenger_is_promoted_only_when_it_wins_its_duel(registry, wins):
    first = _admit(registry, b"graph-1", lambda card: challenge(registry, card, lambda old: None))
    seen: list[ModelCard] = []

    def duel(old: ModelCard):
        seen.append(old)
        return settle("AUC 0.8 vs 0.7", wins)

    second = _admit(registry, b"graph-2", lambda card: challenge(registry, card, duel))
    assert [c.version for c in seen] == [first.card.version]
    assert second.promoted is wins
    assert second.why == ("AUC 0.8 vs 0.7: promoted" if wins else "AUC 0.8 vs 0.7: champion kept")
    expected = second.card.version if wins else first.card.version
    assert registry.champion("m").version == expected == second.champion
    # Registered either way: a lost challenger stays in the registry's history.
    assert {c.version for c in registry.versions("m")} == {first.card.version, second.card.version}


def test_an_unfair_comparison_is_settled_without_a_duel(registry):
    _admit(registry, b"graph-1", lambda card: challenge(registry, card, lambda old: None), h=7)

    def unfair(old: ModelCard):
        if old.training["h"] != 14:
            return True, f"champion {old.version} predicts another horizon: promoted"
        return None

    def duel(old):
        raise AssertionError("settled before the duel")

    judge = lambda card: challenge(registry, card, duel, unfair=unfair)  # noqa: E731
    second = _admit(registry, b"graph-2", judge, h=14)
    assert second.promoted and "predicts another horizon" in second.why


def test_a_figure_writes_numbers_by_its_format_and_none_as_a_dash():
    card = ModelCard(model="m", version="v", **_card())
    view = VersionsView(
        "m models",
        (
            Figure("auc", lambda c: c.metrics["model"]["auc"]),
            Figure("parity", lambda c: c.parity["max_abs_diff"], ".1g"),
            Figure("rounds", lambda c: c.best_iteration, ""),
            Figure("missing", lambda c: None),
            Figure("day", lambda c: c.training["last_day"]),
        ),
    )
    assert [f.shown(card) for f in view.figures] == ["0.7000", "1e-07", "3", "-", "2026-11-30"]
