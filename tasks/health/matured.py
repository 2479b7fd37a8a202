"""Judging served predictions once their outcomes are in, and watching a champion's inputs.

Pure functions over frames and arrays: the rows of ``model_health`` (:func:`judged_rows`,
:func:`reliability_rows`), the calibration figures (:func:`reliability`,
:func:`calibration_error`), the population stability index and the ``model_drift`` rows
(:func:`psi`, :func:`drift_rows`), and the alerts both raise (:func:`losing_streaks`,
:func:`drift_alerts`). The warehouse-facing code is tasks/health/units.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from nightowl.tasks.evaluate.rows import LOWER_IS_BETTER, MODEL, NEAREST_ZERO, RULE, verdicts
from nightowl.warehouse.tables import MODEL_DRIFT, MODEL_HEALTH

#: The scorer (and kind) of what was served: the model, or the simple rule its guard served.
SERVED = "served"
#: Metrics that only a probability has (a rule's score is a ranking).
PROBABILITY_ONLY = frozenset({"brier", "ece"})
#: Added to empty bins so that the index stays finite (the usual convention).
_EPS = 1e-4


@dataclass(frozen=True)
class Cohort:
    """What one served night of one model is judged on: its units and their outcome window."""

    model: str
    model_version: str
    as_of: date
    outcome_start: date
    outcome_end: date
    protocol: str
    units: int
    #: The metric that decides whether what was served beat its best simple rule.
    primary: str


def judged_rows(
    cohort: Cohort,
    figures: Mapping[str, Mapping[str, float | None]],
    metrics: tuple[str, ...],
) -> pl.DataFrame:
    """``model_health`` rows for ``figures`` (scorer → metric → value; ``served`` first, the
    others the simple rules judged on the same units) of one cohort."""
    rows = [
        _row(cohort, scorer, metric, values.get(metric))
        for scorer, values in figures.items()
        for metric in metrics
        if scorer == SERVED or metric not in PROBABILITY_ONLY
    ]
    return pl.DataFrame(rows, schema=MODEL_HEALTH.schema)


def _row(cohort: Cohort, scorer: str, metric: str, value: float | None, bin_no: int | None = None):
    return {
        "model": cohort.model,
        "model_version": cohort.model_version,
        "outcome_start": cohort.outcome_start,
        "outcome_end": cohort.outcome_end,
        "scorer": scorer,
        "kind": SERVED if scorer == SERVED else RULE,
        "protocol": cohort.protocol,
        "metric": metric,
        "bin": bin_no,
        "value": None if value is None else float(value),
        "higher_is_better": None if metric in NEAREST_ZERO else metric not in LOWER_IS_BETTER,
        "units": cohort.units,
        "primary": metric == cohort.primary and bin_no is None,
    }


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int) -> pl.DataFrame:
    """The reliability curve of probabilities ``scores`` against 0/1 ``labels``: per equal-width
    bin of [0, 1] that holds a score, its mean score (predicted), the share of positives
    (observed) and its count."""
    which = np.minimum((np.asarray(scores, dtype=np.float64) * bins).astype(np.int64), bins - 1)
    return (
        pl.DataFrame({"bin": which.astype(np.int32), "p": scores, "y": labels})
        .group_by("bin")
        .agg(
            pl.col("p").mean().alias("predicted"),
            pl.col("y").cast(pl.Float64).mean().alias("observed"),
            pl.len().cast(pl.Int64).alias("count"),
        )
        .sort("bin")
    )


def calibration_error(curve: pl.DataFrame) -> float | None:
    """Expected calibration error of a reliability curve: the count-weighted mean gap between
    predicted and observed (0: perfectly calibrated)."""
    total = int(curve["count"].sum()) if curve.height else 0
    if not total:
        return None
    gaps = (curve["predicted"] - curve["observed"]).abs() * curve["count"]
    return float(gaps.sum() / total)


def reliability_rows(cohort: Cohort, curve: pl.DataFrame) -> pl.DataFrame:
    """The reliability curve as ``model_health`` rows of the served scorer: metrics
    ``reliability_predicted``, ``reliability_observed`` and ``reliability_count`` per bin."""
    rows = [
        _row(cohort, SERVED, f"reliability_{name}", row[name], row["bin"])
        for row in curve.iter_rows(named=True)
        for name in ("predicted", "observed", "count")
    ]
    return pl.DataFrame(rows, schema=MODEL_HEALTH.schema)


# ---- drift ----------------------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float | None:
    """Population stability index of ``current`` against ``reference`` (missing values left
    out): over the reference's quantile bins, or over its values when it has no more distinct
    ones than ``bins``; None when either side has no value."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        return None
    values = np.unique(ref)
    if len(values) <= bins:
        # A few distinct values (flags, counts): one bin per value, one for anything else.
        ref_share = _shares(np.searchsorted(values, ref), len(values) + 1)
        known = np.isin(cur, values)
        codes = np.where(known, np.searchsorted(values, cur), len(values))
        cur_share = _shares(codes, len(values) + 1)
    else:
        inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        ref_share = _shares(np.searchsorted(inner, ref, side="right"), len(inner) + 1)
        cur_share = _shares(np.searchsorted(inner, cur, side="right"), len(inner) + 1)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _shares(codes: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n).astype(np.float64)
    return np.maximum(counts / counts.sum(), _EPS)


def drift_rows(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str],
    kind: str,
    *,
    bins: int,
    psi_threshold: float,
    missing_threshold: float,
    exempt: frozenset[str] = frozenset(),
) -> pl.DataFrame:
    """Per column of ``columns`` present in both frames: PSI, missing shares and means of
    ``current`` against ``reference``, and whether it drifted (PSI above ``psi_threshold``, or
    a missing share up by more than ``missing_threshold``; never for a column in ``exempt``).
    Columns kind, column, psi, missing_share, reference_missing_share, mean, reference_mean,
    drifted."""
    rows = []
    for column in columns:
        if column not in reference.columns or column not in current.columns:
            continue
        # Nulls become NaN: one array per side serves every figure.
        ref = reference[column].cast(pl.Float64).to_numpy()
        cur = current[column].cast(pl.Float64).to_numpy()
        index = psi(ref, cur, bins)
        missing, ref_missing = _missing(cur), _missing(ref)
        drifted = column not in exempt and (
            (index is not None and index > psi_threshold)
            or missing - ref_missing > missing_threshold
        )
        rows.append(
            {
                "kind": kind,
                "column": column,
                "psi": index,
                "missing_share": missing,
                "reference_missing_share": ref_missing,
                "mean": _mean(cur),
                "reference_mean": _mean(ref),
                "drifted": drifted,
            }
        )
    schema = {c: t for c, t in MODEL_DRIFT.schema.items() if c in _DRIFT_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


_DRIFT_COLUMNS = (
    "kind",
    "column",
    "psi",
    "missing_share",
    "reference_missing_share",
    "mean",
    "reference_mean",
    "drifted",
)


def _missing(values: np.ndarray) -> float:
    return float(np.isnan(values).mean()) if len(values) else 0.0


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


# ---- alerts ---------------------------------------------------------------------------------


def health_verdicts(health: pl.DataFrame, margin: float = 0.0) -> pl.DataFrame:
    """Per model, protocol and served night (``origin``): the served value of the primary
    metric, the best simple rule's, and whether what was served beat it (see
    tasks/evaluate/rows.py ``verdicts``)."""
    figures = health.filter(pl.col("bin").is_null()).select(
        "model",
        pl.col("as_of").alias("origin"),
        "scorer",
        pl.col("kind").replace({SERVED: MODEL}),
        "protocol",
        "metric",
        "value",
        "higher_is_better",
        "primary",
    )
    return verdicts(figures, margin)


#: The judged models of each registered model (the propensity model serves churn risk too).
JUDGED_AS = {"propensity": ("propensity", "churn")}


def matured_lines(health: pl.DataFrame, model: str, version: str) -> list[str]:
    """One line per judged model of registered ``model``: the newest night served by
    ``version`` (or by the rule served in its place) whose outcomes are in, and what was served
    there against the best simple rule. When none has matured yet, a line saying so, then the
    newest judged night of an earlier version, named."""
    mine = health.filter(pl.col("model").is_in(JUDGED_AS.get(model, (model,))))
    theirs = mine.filter(pl.col("model_version").str.ends_with(version))
    lines = []
    if not theirs.height:
        lines.append(f"matured: no night served by {version} has had its outcomes in yet")
        theirs = mine
    judged = newest_verdicts(
        health_verdicts(theirs).join(
            theirs.select(
                "model", "protocol", pl.col("as_of").alias("origin"), "model_version"
            ).unique(["model", "protocol", "origin"]),
            on=["model", "protocol", "origin"],
            how="left",
        )
    )
    for r in judged.iter_rows(named=True):
        by = "" if r["model_version"].endswith(version) else f" by {r['model_version']}"
        lines.append(
            f"matured ({r['model']}, {r['protocol']}, served {r['origin']}{by}): {r['metric']} "
            f"{r['model_value']:.4f} vs {r['rule_value']:.4f} for {r['best_rule']}"
            + ("" if r["beats"] else " [not better than the rule]")
        )
    return lines


def newest_verdicts(judged: pl.DataFrame) -> pl.DataFrame:
    """Of ``health_verdicts`` rows, each model and protocol's newest judged night, in model and
    protocol order."""
    newest = judged.sort("origin").group_by("model", "protocol", maintain_order=True).last()
    return newest.sort("model", "protocol")


def losing_streaks(health: pl.DataFrame, nights: int, margin: float = 0.0) -> pl.DataFrame:
    """The models whose served predictions lost to their best simple rule on each of their
    newest ``nights`` judged nights: model, protocol, metric, best_rule, nights (dates, oldest
    first), served and rule (the mean primary figures over those nights)."""
    judged = health_verdicts(health, margin)
    newest = (
        judged.sort("origin", descending=True)
        .group_by("model", "protocol", maintain_order=True)
        .head(nights)
    )
    return (
        newest.group_by("model", "protocol", "metric", maintain_order=True)
        .agg(
            pl.len().alias("judged"),
            (~pl.col("beats")).all().alias("lost_all"),
            pl.col("best_rule").mode().first(),
            pl.col("origin").sort().alias("nights"),
            pl.col("model_value").mean().alias("served"),
            pl.col("rule_value").mean().alias("rule"),
        )
        .filter((pl.col("judged") == nights) & pl.col("lost_all"))
        .drop("judged", "lost_all")
        .sort("model", "protocol")
    )


def losing_alerts(streaks: pl.DataFrame) -> list[str]:
    """One sentence per losing streak: the model, the metric, the rule and the nights."""
    return [
        f"{row['model']} ({row['protocol']}): what was served lost to the simple rule "
        f"{row['best_rule']} on {row['metric']} for {len(row['nights'])} served nights in a row "
        f"({', '.join(d.isoformat() for d in row['nights'])}; mean {row['served']:.4f} vs "
        f"{row['rule']:.4f})"
        for row in streaks.iter_rows(named=True)
    ]


def drift_alerts(drift: pl.DataFrame, psi_threshold: float) -> list[str]:
    """One sentence per model with drifted inputs or scores: which, and by how much."""
    lines = []
    for (model,), part in drift.filter("drifted").group_by("model", maintain_order=True):
        what = [
            f"{r['column']} ({r['kind']}, PSI {_shown(r['psi'])}, missing "
            f"{r['reference_missing_share']:.0%} → {r['missing_share']:.0%})"
            for r in part.sort("psi", descending=True, nulls_last=True).iter_rows(named=True)
        ]
        lines.append(
            f"{model}: {len(what)} column(s) drifted from the champion's training data "
            f"(PSI above {psi_threshold:g} or more missing values): {'; '.join(what[:5])}"
            + (f" and {len(what) - 5} more" if len(what) > 5 else "")
        )
    return lines


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
