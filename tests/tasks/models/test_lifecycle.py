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
    rule_guard,
    rule_version,
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


def _guarded(registry: Registry, onnx: bytes, beats: bool, duel_wins: bool = True):
    guard = rule_guard(
        {"model": {"auc": 0.70}, "rfm": {"auc": 0.69 if beats else 0.72}, "none": {"auc": None}},
        "auc",
        ("rfm", "none"),
        0.0,
    )
    card = _card()
    judge = lambda c: challenge(registry, c, lambda old: settle("duel", duel_wins))  # noqa: E731
    return admit_trained(registry, "m", DAY, Trained(onnx, "native"), judge, **card, guard=guard)


def test_the_guard_names_the_best_rule_and_a_missing_figure_never_wins():
    metrics = {"model": {"wape": 0.9}, "naive": {"wape": 1.1}, "ma": {"wape": 0.95}, "x": {}}
    guard = rule_guard(metrics, "wape", ("naive", "ma", "x"), 0.0, lower_is_better=True)
    assert guard["rule"] == "ma" and guard["rule_value"] == 0.95 and guard["beats"]
    assert not rule_guard(metrics, "wape", ("naive", "ma"), 0.1, lower_is_better=True)["beats"]
    tolerant = rule_guard({"model": {"auc": 0.7}, "r": {"auc": 0.72}}, "auc", ("r",), -0.05)
    assert tolerant["beats"]  # a negative margin keeps a model unless it trails by more


def test_a_first_model_that_loses_to_its_rule_is_promoted_but_serves_the_rule(registry):
    first = _guarded(registry, b"graph-1", beats=False)
    assert first.promoted and first.card.serves_rule == "rfm"
    assert first.why.startswith("first model: promoted; it serves the simple rule rfm: ")
    assert "did not beat its best simple rule rfm (held-out auc 0.7000 vs 0.7200)" in first.why
    assert rule_version(first.card) == f"rule:rfm@{first.card.version}"


def test_the_guard_decides_before_the_duel_between_a_winner_and_a_loser(registry):
    champion = _guarded(registry, b"graph-1", beats=True)
    loser = _guarded(registry, b"graph-2", beats=False, duel_wins=True)
    assert not loser.promoted and loser.champion == champion.card.version
    assert f"champion {champion.card.version} did: champion kept" in loser.why
    winner = _guarded(registry, b"graph-3", beats=True, duel_wins=False)
    assert not winner.promoted  # both beat their rules: the duel decides
    # A champion that serves its rule gives way to one that beats its own, duel or not.
    registry.promote("m", loser.card.version, "test")
    again = _guarded(registry, b"graph-4", beats=True, duel_wins=False)
    assert again.promoted and "served its rule: promoted" in again.why
