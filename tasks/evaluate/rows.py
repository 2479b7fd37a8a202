"""The rows of ``model_evaluation`` and the verdicts drawn from them.

One row is one figure: a model or one of its simple rules (or a learned reference), scored on
the outcomes after one origin, under one protocol, by one metric. Every model's backtest writes
its figures through :func:`figure_rows`, and every reader (``nightowl evaluate``, the report
page) draws its verdict — does the model beat its best simple rule? — through :func:`verdicts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import polars as pl

from nightowl.warehouse.tables import MODEL_EVALUATION

MODEL, RULE, REFERENCE = "model", "rule", "reference"

#: Metrics where a smaller value is better, and those where nearest zero is (``higher_is_better``
#: null); every other one is better larger.
LOWER_IS_BETTER = frozenset({"brier", "wape", "mase"})
NEAREST_ZERO = frozenset({"bias"})

SCHEMA = MODEL_EVALUATION.schema


@dataclass(frozen=True)
class Judged:
    """What one origin of one model's backtest judged: who was scored, on how many units."""

    model: str
    origin: date
    horizon_days: int
    protocol: str
    units: int
    #: The metric that decides whether the model beats its rules.
    primary: str


def figure_rows(
    judged: Judged,
    figures: Mapping[str, Mapping[str, float | None]],
    kinds: Mapping[str, str],
    metrics: tuple[str, ...],
) -> pl.DataFrame:
    """``model_evaluation`` rows for ``figures`` (scorer → metric → value) of one judged origin:
    the ``metrics`` named, for every scorer whose kind ``kinds`` gives (missing values: null)."""
    rows = [
        {
            "model": judged.model,
            "origin": judged.origin,
            "horizon_days": judged.horizon_days,
            "scorer": scorer,
            "kind": kinds[scorer],
            "protocol": judged.protocol,
            "metric": metric,
            "value": _value(values.get(metric)),
            "higher_is_better": None if metric in NEAREST_ZERO else metric not in LOWER_IS_BETTER,
            "units": judged.units,
            "primary": metric == judged.primary,
        }
        for scorer, values in figures.items()
        if scorer in kinds
        for metric in metrics
    ]
    return pl.DataFrame(rows, schema=SCHEMA)


def _value(value: float | None) -> float | None:
    return None if value is None else float(value)


def verdicts(evaluation: pl.DataFrame, margin: float = 0.0) -> pl.DataFrame:
    """Per model, protocol and origin, on the primary metric: the model's value, its best simple
    rule and that rule's value, and whether the model beats it by more than ``margin``.

    Columns model, protocol, origin, metric, model_value, best_rule, rule_value, beats."""
    primary = evaluation.filter(pl.col("primary") & pl.col("value").is_not_null())
    # Higher is better once a lower-is-better metric is negated: one ordering for all.
    signed = primary.with_columns(
        better=pl.when(pl.col("higher_is_better")).then("value").otherwise(-pl.col("value"))
    )
    keys = ["model", "protocol", "origin", "metric"]
    model = signed.filter(pl.col("kind") == MODEL).select(
        *keys, pl.col("value").alias("model_value"), pl.col("better").alias("model_better")
    )
    rules = (
        signed.filter(pl.col("kind") == RULE)
        .sort([*keys, "better", "scorer"], descending=[False, False, False, False, True, False])
        .group_by(keys, maintain_order=True)
        .first()
        .select(
            *keys,
            pl.col("scorer").alias("best_rule"),
            pl.col("value").alias("rule_value"),
            pl.col("better").alias("rule_better"),
        )
    )
    return (
        model.join(rules, on=keys, how="inner")
        .with_columns(beats=pl.col("model_better") > pl.col("rule_better") + margin)
        .drop("model_better", "rule_better")
        .sort("model", "protocol", "origin")
    )


def summary(verdicts_frame: pl.DataFrame) -> pl.DataFrame:
    """Per model and protocol: origins judged, origins the model won, the mean primary figure
    of the model and of the best rule, and the overall answer (won at every origin)."""
    return (
        verdicts_frame.group_by("model", "protocol", "metric", maintain_order=True)
        .agg(
            pl.len().alias("origins"),
            pl.col("beats").sum().cast(pl.Int64).alias("won"),
            pl.col("model_value").mean(),
            pl.col("best_rule").mode().first(),
            pl.col("rule_value").mean(),
        )
        .with_columns(beats_everywhere=pl.col("won") == pl.col("origins"))
    )


def by_origin(evaluation: pl.DataFrame, metric: str | None = None) -> pl.DataFrame:
    """One row per model, protocol and scorer, one column per origin (oldest first) holding
    ``metric`` (default: each protocol's primary one), and their ``mean``: best read for one
    model and protocol at a time, whose origins are the columns."""
    chosen = pl.col("primary") if metric is None else pl.col("metric") == metric
    picked = evaluation.filter(chosen).with_columns(pl.col("origin").cast(pl.String))
    origins = sorted(picked["origin"].unique().to_list())
    wide = picked.pivot(
        on="origin",
        index=["model", "protocol", "metric", "kind", "scorer"],
        values="value",
        sort_columns=True,
    )
    present = [o for o in origins if o in wide.columns]
    order = pl.col("kind").replace_strict({MODEL: 0, RULE: 1, REFERENCE: 2}, default=3)
    return (
        wide.with_columns(mean=pl.mean_horizontal(present))
        .sort(["model", "protocol", order, "scorer"])
        .select("model", "protocol", "metric", "kind", "scorer", *present, "mean")
    )


def verdict_lines(summary_frame: pl.DataFrame) -> list[str]:
    """One sentence per model and protocol: does it beat its best simple rule, and where."""
    lines = []
    for row in summary_frame.iter_rows(named=True):
        verb = "beats" if row["beats_everywhere"] else "does not always beat"
        lines.append(
            f"{row['model']} ({row['protocol']}, {row['metric']}): the model {verb} its best "
            f"simple rule, {row['best_rule']}, at {row['won']} of {row['origins']} origins "
            f"(mean {row['model_value']:.4f} vs {row['rule_value']:.4f})"
        )
    return lines
