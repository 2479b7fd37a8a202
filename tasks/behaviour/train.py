"""Training the purchase-propensity model: time-split snapshots, LightGBM, metrics beside baselines.

Snapshots are as_of dates. The held-out one is the latest whose horizon is fully observed; the
training ones end a whole horizon before it, so no training label looks at a day the held-out
snapshot is judged on. Early stopping watches a share of training *users* (never the held-out
snapshot), so the held-out metrics are an honest estimate of the next night's quality.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ModelSettings, RecommendSettings
from nightowl.tasks.behaviour.features import btyd_figures, fitted_bgnbd
from nightowl.tasks.models import btyd

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then


@dataclass(frozen=True)
class SnapshotPlan:
    """The as_of dates a model is trained on, and the one it is judged on."""

    train: tuple[date, ...]
    holdout: date


def snapshot_plan(
    first_day: date, last_day: date, cfg: ModelSettings | RecommendSettings
) -> SnapshotPlan:
    """Training and held-out as_of dates for events from ``first_day`` to ``last_day``, for any
    model labelled by a horizon (the propensity model, the recommender)."""
    horizon = timedelta(days=cfg.horizon_days)
    holdout = last_day + timedelta(days=1) - horizon  # its labels end with last_day
    latest_train = holdout - horizon  # its labels end the day before the holdout starts
    earliest = first_day + timedelta(days=cfg.min_history_days)
    candidates = (
        latest_train - timedelta(days=cfg.snapshot_step_days * k) for k in range(cfg.snapshots)
    )
    train = tuple(sorted(d for d in candidates if d >= earliest))
    if not train:
        needed = cfg.min_history_days + 2 * cfg.horizon_days
        have = (last_day - first_day).days + 1
        raise NotEnoughHistory(
            f"training needs at least {needed} days of events ({cfg.min_history_days} of history, "
            f"then a {cfg.horizon_days}-day horizon for training labels and another for the "
            f"held-out snapshot); the warehouse has {have} ({first_day} to {last_day})"
        )
    return SnapshotPlan(train=train, holdout=holdout)


def feature_matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """The named columns as one C-contiguous float32 matrix, nulls as NaN."""
    # Row-major straight away: a column-major copy first would double the peak.
    matrix = frame.select(pl.col(names).cast(pl.Float32)).to_numpy(order="c")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def validation_users(user_ids: pl.Series, share: float) -> np.ndarray:
    """A stable pseudo-random ``share`` of users (by CRC-32 of the id): True where held out."""
    cut = int(share * 1000)
    held = [u for u in user_ids.unique().to_list() if zlib.crc32(u.encode()) % 1000 < cut]
    return user_ids.is_in(held).to_numpy()


def lightgbm_params(cfg: ModelSettings, threads: int) -> dict[str, Any]:
    """LightGBM parameters: binary, regularised, deterministic for a given seed and thread count."""
    return {
        "objective": "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 10.0,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbose": -1,
    }


#: Features whose direction is known: more recent, more frequent, more valuable customers buy
#: more (1: the probability may only rise with the feature, -1: only fall).
MONOTONE = {
    "recency_days": -1,
    "purchase_recency_days": -1,
    "buying_days_total": 1,
    "spend_total": 1,
    "purchase_n_28d": 1,
    "purchase_n_90d": 1,
    "buying_days_hl7": 1,
    "buying_days_hl28": 1,
    "btyd_p_alive": 1,
    "btyd_expected_30d": 1,
}


def fit_propensity(
    train: pl.DataFrame, names: list[str], cfg: ModelSettings, threads: int = 2
) -> lgb.Booster:
    """A booster fitted on ``train`` (features and ``label``), early-stopped on held-out users."""
    held = validation_users(train["user_id"], cfg.validation_share)
    x, y = feature_matrix(train, names), train["label"].to_numpy()
    if y[~held].min(initial=1) == y[~held].max(initial=0):
        raise NotEnoughHistory("training labels are all the same: no purchases, or only purchases")
    params = lightgbm_params(cfg, threads)
    if cfg.monotone:
        params["monotone_constraints"] = [MONOTONE.get(name, 0) for name in names]
        params["monotone_constraints_method"] = "advanced"
    fit = lgb.Dataset(x[~held], y[~held], feature_name=names, free_raw_data=True)
    watch = lgb.Dataset(x[held], y[held], reference=fit)
    return lgb.train(
        params,
        fit,
        num_boost_round=cfg.max_rounds,
        valid_sets=[watch],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )


def classification_metrics(
    labels: np.ndarray, scores: np.ndarray, *, probabilities: bool = True
) -> dict[str, float | None]:
    """ROC-AUC, PR-AUC, Brier score (of probabilities only) and top-decile lift of ``scores``
    against 0/1 ``labels``; None where a measure is undefined."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    base_rate = float(labels.mean()) if len(labels) else 0.0
    top = np.argsort(-scores, kind="stable")[: max(1, len(scores) // 10)]
    both = 0 < labels.sum() < len(labels)
    return {
        "rows": len(labels),
        "positives": int(labels.sum()),
        "base_rate": base_rate,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        # A heuristic's score is a ranking, not a probability: it has no Brier score.
        "brier": float(brier_score_loss(labels, scores)) if probabilities and len(labels) else None,
        "lift_top_decile": float(labels[top].mean() / base_rate) if base_rate else None,
    }


#: The simple rules a propensity model must beat to be served; the best one is served otherwise.
RULES = ("recency_only", "rfm", "bgnbd")
#: Learned references shown beside them (``nightowl evaluate``), never served.
REFERENCES = ("lightgbm_rfm",)
#: What RFM knows of a customer: the inputs of the ``lightgbm_rfm`` reference.
RFM_FEATURES = ["purchase_recency_days", "buying_days_total", "spend_total"]


def baseline_scores(features: pl.DataFrame, horizon_days: int = 30) -> dict[str, np.ndarray]:
    """Heuristic scores a model must beat: recency only, the classic R+F+M quintile sum, and
    BG/NBD expected purchases in the horizon (fitted on the same customers' histories)."""
    return {rule: rule_scores(features, rule, horizon_days) for rule in RULES}


def rule_scores(features: pl.DataFrame, rule: str, horizon_days: int) -> np.ndarray:
    """One simple rule's score per user (higher: likelier to buy); nothing but the features as
    of the same date is read (BG/NBD is fitted on those users' purchase histories)."""
    if rule == "recency_only":
        return -features["recency_days"].to_numpy()
    if rule == "rfm":
        rfm = rfm_table(features)
        return (rfm["r"] + rfm["f"] + rfm["m"]).to_numpy().astype(np.float64) + 1e-9 * -features[
            "recency_days"
        ].to_numpy()  # ties broken by recency
    if rule == "bgnbd":
        return bgnbd_scores(features, fitted_bgnbd(features), horizon_days)
    raise ValueError(f"unknown propensity rule {rule!r}; expected one of {', '.join(RULES)}")


def bgnbd_scores(features: pl.DataFrame, fit: btyd.BgNbd, horizon_days: int) -> np.ndarray:
    """Expected purchases in the next ``horizon_days`` per user (0 for users who never bought)."""
    expected = btyd_figures(features, fit, horizon_days)["expected"]
    return expected.fill_null(0.0).to_numpy()


def fit_rfm_reference(train: pl.DataFrame, cfg: ModelSettings) -> lgb.Booster:
    """LightGBM on the RFM inputs alone, trained like the model: what the other features add."""
    return fit_propensity(train, RFM_FEATURES, cfg)


@dataclass(frozen=True)
class Calibration:
    """A monotone map from a rule's score to a probability (isotonic, fitted on held-out
    outcomes), so that a served rule fills the same probability columns as a model."""

    thresholds: list[float]
    probabilities: list[float]

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """The probability of each score (flat beyond the fitted range)."""
        return np.interp(scores, self.thresholds, self.probabilities)


def calibration(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """The isotonic calibration of ``scores`` against 0/1 ``labels``."""
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, labels)
    return Calibration(
        thresholds=[float(v) for v in fitted.X_thresholds_],
        probabilities=[float(v) for v in fitted.y_thresholds_],
    )


def rfm_table(features: pl.DataFrame) -> pl.DataFrame:
    """``user_id`` with R, F and M quintiles (1-5) among buyers; 0 for users who never bought."""
    buyers = features.filter(pl.col("purchase_recency_days").is_not_null())

    def quintile(col: pl.Expr) -> pl.Expr:
        # Ties share the lower quintile: equal customers get equal scores, whatever their id.
        return (col.rank("min") * 5 / pl.len()).ceil().cast(pl.Int8)

    scored = buyers.select(
        "user_id",
        quintile(-pl.col("purchase_recency_days")).alias("r"),
        quintile(pl.col("buying_days_total")).alias("f"),
        quintile(pl.col("spend_total")).alias("m"),
    )
    return (
        features.select("user_id")
        .join(scored, on="user_id", how="left", maintain_order="left")
        .with_columns(pl.col("r", "f", "m").fill_null(0))
    )


#: The classic RFM grid: (R scores, F scores) → segment name, first match wins.
RFM_GRID: tuple[tuple[range, range, str], ...] = (
    (range(5, 6), range(4, 6), "champions"),
    (range(3, 5), range(4, 6), "loyal"),
    (range(4, 6), range(2, 4), "potential_loyalist"),
    (range(5, 6), range(1, 2), "new_customer"),
    (range(4, 5), range(1, 2), "promising"),
    (range(3, 4), range(3, 4), "needs_attention"),
    (range(3, 4), range(1, 3), "about_to_sleep"),
    (range(1, 3), range(5, 6), "cannot_lose"),
    (range(1, 3), range(3, 5), "at_risk"),
    (range(1, 3), range(1, 3), "hibernating"),
)


def rfm_segment(r: pl.Expr, f: pl.Expr) -> pl.Expr:
    """The RFM grid's segment name for R and F scores; ``prospect`` for users who never bought."""
    expr: Then | ChainedThen = pl.when(r == 0).then(pl.lit("prospect"))
    for rs, fs, name in RFM_GRID:
        expr = expr.when(r.is_in(list(rs)) & f.is_in(list(fs))).then(pl.lit(name))
    return expr.otherwise(pl.lit("other"))
