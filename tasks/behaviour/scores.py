"""User scores from a propensity model's probabilities: churn risk, risk tier and RFM segment."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from nightowl.tasks.behaviour.train import rfm_segment, rfm_table
from nightowl.tasks.models.score import TREE_ENSEMBLE

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then


def user_scores(
    features: pl.DataFrame,
    probability: np.ndarray,
    *,
    horizon_days: int,
    churn_lookback_days: int,
    risk_tiers: dict[str, float],
    model_version: str,
    provider: str,
    as_of: date,
    graph: str = TREE_ENSEMBLE,
) -> pl.DataFrame:
    """One row per user: p(purchase within H days), churn risk and tier for active customers,
    RFM segment, and the model version, provider and graph that produced the score."""
    p = pl.Series(f"p_purchase_{horizon_days}d", probability, dtype=pl.Float64)
    active = pl.col("purchase_recency_days") < churn_lookback_days
    churn = pl.when(active).then(1.0 - p).otherwise(None)
    tier: Then | ChainedThen = pl.when(pl.col("purchase_recency_days").is_null()).then(
        pl.lit("prospect")
    )
    tier = tier.when(~active).then(pl.lit("lapsed"))
    for name, threshold in sorted(risk_tiers.items(), key=lambda kv: -kv[1]):
        tier = tier.when(churn >= threshold).then(pl.lit(name))
    scored = features.join(rfm_table(features), on="user_id", how="left", maintain_order="left")
    return scored.select(
        "user_id",
        p,
        churn.alias("churn_risk"),
        tier.otherwise(pl.lit("low")).alias("risk_tier"),
        rfm_segment(pl.col("r"), pl.col("f")).alias("segment"),
        pl.lit(model_version).alias("model_version"),
        pl.lit(provider).alias("provider"),
        pl.lit(graph).alias("scoring_graph"),
        pl.lit(as_of).alias("as_of"),
    )
