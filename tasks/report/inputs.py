"""What a report is built from: the frames it reads and the partitions they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import polars as pl

from nightowl.schemas.config import HealthSettings
from nightowl.warehouse.manifest import InputRef


@dataclass
class ReportInputs:
    """The frames a report reads, and the partitions they came from (its lineage)."""

    as_of: date
    events: pl.LazyFrame
    items: pl.LazyFrame | None
    predictions: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: Earlier nights' forecasts for the days shown, for forecast-vs-actual.
    past_forecasts: pl.DataFrame | None = None
    #: User scores a week before, for the change in customers at risk.
    week_ago_scores: pl.DataFrame | None = None
    #: The newest ``model_evaluation`` figures as of this date (``nightowl evaluate``), if any.
    evaluation: pl.DataFrame | None = None
    #: Every ``model_health`` figure of the served nights before this date (as_of: the night).
    health: pl.DataFrame | None = None
    #: Tonight's ``model_drift`` rows.
    drift: pl.DataFrame | None = None
    #: The thresholds the model-health alerts use.
    health_settings: HealthSettings = field(default_factory=HealthSettings)
    refs: list[InputRef] = field(default_factory=list)
