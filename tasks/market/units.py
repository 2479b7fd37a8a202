"""Units of market data: price position, demand model training with its backtest, nightly forecasts.

``price_position_table`` publishes ``predictions/price_position/as_of=D`` (the day before D);
``train_demand`` backtests on rolling weekly origins, fits the model, exports it to ONNX, runs the
parity gate, registers it and maybe promotes it; ``forecast_demand`` publishes
``demand_forecast``, ``category_forecast`` and ``price_scenarios`` for the days from D on.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import MarketSettings, ModelSettings
from nightowl.tasks.common.reads import clean_before
from nightowl.tasks.ingest.units import raw_rows
from nightowl.tasks.market import forecast as fc
from nightowl.tasks.market import prices as market
from nightowl.tasks.models import score, tensorised
from nightowl.tasks.models.lifecycle import (
    RULE_GRAPH,
    Figure,
    NoChampion,
    Trained,
    TrainOutcome,
    Verdict,
    VersionsView,
    admit_trained,
    cadence_due,
    challenge,
    rule_guard,
    rule_version,
    settle,
)
from nightowl.warehouse.landing import date_in_name
from nightowl.warehouse.ledger import Ledger, LedgerEntry, live_deliveries
from nightowl.warehouse.manifest import InputRef
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CATEGORY_FORECAST,
    CLEAN_EVENTS,
    CLEAN_MARKET_INDICATORS,
    CLEAN_MARKET_PRICES,
    DEMAND_FORECAST,
    PRICE_POSITION,
    PRICE_SCENARIOS,
)

MODEL = "demand"
#: How ``nightowl models`` lists its versions.
VERSIONS = VersionsView(
    "demand models (backtest WAPE, item x day: model, seasonal naive, 28-day average)",
    (
        Figure("weeks", lambda c: len(c.training["backtest_origins"]), ""),
        Figure("WAPE", lambda c: c.metrics["model"]["wape"], ".3f"),
        Figure("s-naive", lambda c: c.metrics["seasonal_naive"]["wape"], ".3f"),
        Figure("MA-28", lambda c: c.metrics["moving_average_28d"]["wape"], ".3f"),
        Figure("category WAPE", lambda c: c.metrics["model"]["category_wape"], ".3f"),
        Figure("bias", lambda c: c.metrics["model"]["bias"], ".3f"),
        Figure("parity", lambda c: c.parity["max_rel_diff"], ".1g"),
        Figure("rounds", lambda c: c.best_iteration, ""),
    ),
)
log = logging.getLogger("nightowl")


class PricePositionReport(BaseModel):
    """What the price-position step published."""

    table: str = PRICE_POSITION.name
    as_of: str
    rows: int
    content_hash: str
    overpriced: int = Field(description="Items priced above their competitors' median")
    seconds: float = 0.0


class DemandTrainReport(TrainOutcome):
    """What the demand training did, with its backtest and the indicators that were stale."""

    backtest: list[dict[str, Any]] = Field(default_factory=list)
    stale_indicators: list[str] = Field(default_factory=list)


class ForecastReport(BaseModel):
    """What the forecast step published, with which model, and which indicators were stale."""

    table: str = DEMAND_FORECAST.name
    as_of: str
    rows: int
    content_hash: str
    category_rows: int
    scenario_rows: int
    model_version: str
    provider: str
    graph: str = Field(default="tree_ensemble", description="tree_ensemble or tensorised")
    stale_indicators: list[str] = Field(default_factory=list)
    seconds: float = 0.0


# ---- inputs ---------------------------------------------------------------------------------


@dataclass
class DemandInputs:
    """Everything known before ``as_of`` that price position and the forecast read."""

    as_of: date
    market: pl.DataFrame
    panel: pl.DataFrame
    categories: pl.DataFrame
    indicators: pl.DataFrame | None
    stale: list[dict[str, Any]]
    refs: list[InputRef]
    #: Our price and promotion per item on days from ``as_of`` on, where plans set them.
    planned: pl.DataFrame | None = None

    @property
    def last_day(self) -> date:
        return self.as_of - timedelta(days=1)


def _items_entries(wh: Warehouse, as_of: date) -> list:
    """The items files known before ``as_of``: ingested by then, or dated before it in their name
    (a backfill or a first run may bring months of daily exports at once)."""

    def known(entry: LedgerEntry) -> bool:
        dated = date_in_name(entry.name)
        return entry.arrival_day < as_of.isoformat() or (dated is not None and dated < as_of)

    return [e for e in live_deliveries(Ledger(wh).entries("items")) if known(e)]


def market_refs(wh: Warehouse, as_of: date) -> list[InputRef]:
    """What the market tables as of ``as_of`` are computed from: items files, clean partitions."""
    refs = [e.ref for e in _items_entries(wh, as_of)]
    for table in (CLEAN_MARKET_PRICES, CLEAN_EVENTS, CLEAN_MARKET_INDICATORS):
        refs += [
            m.ref
            for m in wh.manifests(table.layer, table.name)
            if m.partition["dt"] < as_of.isoformat()
        ]
    return refs


def market_inputs(
    wh: Warehouse, as_of: date, cfg: MarketSettings, plan_days: int | None = None
) -> DemandInputs:
    """Our prices, competitor quotes, sales and indicators before ``as_of``, item by day, and our
    plans for the ``plan_days`` (default ``horizon_days``) from it."""
    last_day = as_of - timedelta(days=1)
    entries = _items_entries(wh, as_of)
    if not entries:
        raise NotEnoughHistory(f"no items rows arrived before {as_of}: no prices to position")
    prices, price_refs = clean_before(wh, CLEAN_MARKET_PRICES.name, as_of)
    events, event_refs = clean_before(wh, CLEAN_EVENTS.name, as_of)
    indicators, indicator_refs = clean_before(wh, CLEAN_MARKET_INDICATORS.name, as_of)
    empty_events = pl.LazyFrame(
        schema={
            "event_type": pl.String,
            "item_id": pl.String,
            "event_time": pl.Datetime("us", "UTC"),
            "quantity": pl.Int64,
            "price": pl.Float64,
        }
    )
    events = events if events is not None else empty_events
    exported = market.our_price_history(raw_rows(wh, entries))
    history = market.with_paid_prices(exported, market.paid_price_history(events)).collect().lazy()
    ours = market.our_daily_prices(history, last_day)
    plan_days = cfg.horizon_days if plan_days is None else plan_days
    planned = market.planned_prices(history, last_day, plan_days).collect()
    empty_quotes = pl.LazyFrame(
        schema={
            "date": pl.Date,
            "item_id": pl.String,
            "competitor": pl.String,
            "price": pl.Float64,
        }
    )
    quotes = market.competitor_quotes(
        prices if prices is not None else empty_quotes, last_day, cfg.competitor_max_staleness_days
    )
    grid = market.item_day_market(ours, quotes).collect()
    if grid.height == 0:
        raise NotEnoughHistory(f"no item has a known price before {as_of}")
    sales = fc.daily_sales(events)
    panel = fc.item_day_panel(grid.lazy(), sales).collect()
    categories = fc.category_panel(panel.lazy()).collect()
    ind: pl.DataFrame | None = None
    stale: list[dict[str, Any]] = []
    if indicators is not None:
        days = sorted(panel["date"].unique().to_list())
        names = panel["category"].unique().sort(nulls_last=True).to_list()  # None: no category
        ind, stale = fc.indicator_panel(indicators, days, names, cfg.indicator_max_staleness_days)
    refs = [e.ref for e in entries] + price_refs + event_refs + indicator_refs
    return DemandInputs(as_of, grid, panel, categories, ind, stale, refs, planned)


def _holidays(inputs: DemandInputs, cfg: MarketSettings, horizon: int) -> list[date]:
    # Series.min() is typed as any Python scalar; of this pl.Date column, never empty
    # (market_inputs refuses an empty grid): a date.
    first = cast(date, inputs.panel["date"].min())
    return fc.holiday_days(
        first,
        inputs.as_of + timedelta(days=horizon),
        cfg.holidays_country,
        cfg.holidays_subdivision,
    )


def _stale_names(stale: list[dict[str, Any]]) -> list[str]:
    return [f"{s['indicator']} (last seen {s['last_seen']})" for s in stale if s["stale"]]


# ---- price position -------------------------------------------------------------------------


def price_position_table(
    wh: Warehouse, as_of: date, cfg: MarketSettings, inputs: DemandInputs | None = None
) -> PricePositionReport:
    """Publish where each item's price stood on the day before ``as_of``."""
    started = time.perf_counter()
    inputs = inputs or market_inputs(wh, as_of, cfg)
    frame = market.price_position(inputs.market.lazy(), inputs.last_day).collect()
    manifest = wh.write_partition(
        PRICE_POSITION.layer,
        PRICE_POSITION.name,
        {"as_of": as_of.isoformat()},
        frame,
        inputs=inputs.refs,
    )
    return PricePositionReport(
        as_of=as_of.isoformat(),
        rows=manifest.rows,
        content_hash=manifest.content_hash,
        overpriced=int((frame["gap_pct"] > 0).sum()),
        seconds=round(time.perf_counter() - started, 3),
    )


# ---- training -------------------------------------------------------------------------------


def training_due(wh: Warehouse, last_day: date, cfg: MarketSettings) -> str | None:
    """Why a demand model should be trained with data up to ``last_day`` (None: it is fresh)."""
    return cadence_due(Registry(wh), MODEL, last_day, cfg.horizon_days, cfg.retrain_every_days)


def _origins(inputs: DemandInputs, cfg: MarketSettings) -> tuple[list[date], list[date]]:
    """Training origins (every ``origin_step_days`` over ``history_days``) and the backtest's
    weekly origins, newest last."""
    first_day = cast(date, inputs.panel["date"].min())  # as in _holidays: a date
    earliest = max(
        first_day + timedelta(days=cfg.min_history_days),
        inputs.as_of - timedelta(days=cfg.history_days),
    )
    backtest = [inputs.as_of - timedelta(days=7 * k) for k in range(cfg.backtest_origins, 0, -1)]
    # Each backtest fold needs two weeks of earlier targets: one to fit, one to stop early.
    if backtest[0] - timedelta(days=14) <= earliest:
        need = cfg.min_history_days + 14 + 7 * cfg.backtest_origins
        raise NotEnoughHistory(
            f"sales history from {first_day} to {inputs.last_day} is too short for "
            f"{cfg.backtest_origins} weekly backtest origins (needs about {need} days)"
        )
    span = (inputs.last_day - earliest).days
    # Thin the origins out when every day's would make more rows than max_training_rows.
    panel = inputs.panel
    items = panel.filter((pl.col("date") == inputs.last_day) & pl.col("active")).height
    affordable = max(1, cfg.max_training_rows // max(1, items * cfg.horizon_days))
    step = max(cfg.origin_step_days, math.ceil((span + 1) / affordable))
    train = [inputs.last_day - timedelta(days=d) for d in range(0, span + 1, step)]
    return sorted(set(train) | set(backtest)), backtest


def train_demand(
    wh: Warehouse, last_day: date, cfg: MarketSettings, *, only_if_due: bool = False
) -> DemandTrainReport:
    """Backtest, fit, export and register a demand model on data up to ``last_day``; promote it
    when its newest backtest week is at least as good as the champion's on the same week."""
    started = time.perf_counter()
    if only_if_due and (due := training_due(wh, last_day, cfg)) is None:
        champion = Registry(wh).champion(MODEL)
        return DemandTrainReport(
            trained=False,
            reason=f"champion {champion.version} is fresh" if champion else "no champion",
            champion=champion.version if champion else None,
        )
    reason = due if only_if_due else "asked for"
    inputs = market_inputs(wh, last_day + timedelta(days=1), cfg)
    fitted = backtested_model(inputs, cfg)
    exports = tensorised.gated_exports(
        fitted.booster,
        fc.matrix(fitted.newest_fold[0], fitted.names),
        cfg.parity_tolerance,
        relative=True,
        what="the demand model",
    )
    registry = Registry(wh)
    guard = rule_guard(
        fitted.metrics, "wape", fc.FORECASTERS[1:], cfg.rule_margin, lower_is_better=True
    )
    rows, _ = fitted.newest_fold
    rule_forecast = fc.baseline_forecasts(rows)[guard["rule"]]
    # Intervals around a served rule's forecast come from its own errors, not the model's.
    guard["dispersion"] = fc.dispersion(rows[fc.TARGET].to_numpy(), rule_forecast)
    admitted = admit_trained(
        registry,
        MODEL,
        last_day,
        Trained(exports.tree_ensemble, fitted.booster.model_to_string(), exports.tensorised),
        lambda card: _challenge(registry, card, fitted.newest_fold),
        code_version=wh.code_version,
        features=[{"name": n, "dtype": "float32"} for n in fitted.names],
        training={
            "last_day": last_day.isoformat(),
            "horizon_days": cfg.horizon_days,
            "first_origin": fitted.origins[0].isoformat(),
            "origins": len(fitted.origins),
            "rows": fitted.rows,
            "dispersion": fitted.phi,
            "cold_start": fitted.cold_start,
            "grain": fitted.grain,
            "interval": cfg.interval,
            "backtest_origins": [o.isoformat() for o in fitted.backtest_origins],
            "backtest": fitted.backtest,
            "indicators": inputs.stale,
        },
        metrics=fitted.metrics,
        parity=exports.parity,
        params=fc.lightgbm_params(cfg, 2) | {"max_rounds": cfg.max_rounds},
        best_iteration=fitted.booster.best_iteration,
        inputs=inputs.refs,
        guard=guard,
    )
    return DemandTrainReport(
        trained=True,
        reason=f"{reason}; {admitted.why}",
        version=admitted.card.version,
        promoted=admitted.promoted,
        champion=admitted.champion,
        backtest=fitted.backtest,
        metrics=fitted.metrics,
        guard=guard,
        parity_max_diff=exports.parity["max_rel_diff"],
        stale_indicators=_stale_names(inputs.stale),
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass
class BacktestedModel:
    """A demand model fitted on all known targets, and how its method fared week by week."""

    booster: lgb.Booster
    phi: float
    names: list[str]
    rows: int
    origins: list[date]
    backtest_origins: list[date]
    backtest: list[dict[str, Any]]
    metrics: dict[str, dict[str, float | None]]
    newest_fold: tuple[pl.DataFrame, np.ndarray]
    #: Items that never sold are forecast by ``fc.with_cold_start``, not the model.
    cold_start: bool
    #: ``day`` or ``week``: what one row's target is.
    grain: str = "day"


def demand_grain(inputs: DemandInputs, cfg: MarketSettings) -> str:
    """The grain to forecast ``inputs`` at: the setting, or for ``auto`` what the sales show."""
    return fc.sales_grain(inputs.panel) if cfg.grain == "auto" else cfg.grain


def grain_rows(
    inputs: DemandInputs,
    cfg: MarketSettings,
    origins: list[date],
    grain: str,
    horizon_days: int | None = None,
    planned: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The model's rows at ``origins``: one per item and day ahead (``day``), or per item and
    week ahead (``week``: the horizon in whole weeks, at least one)."""
    horizon = horizon_days or cfg.horizon_days
    if grain == "week":
        weeks = max(1, horizon // fc.WEEK)
        return fc.weekly_demand_rows(
            inputs.panel.lazy(),
            inputs.categories.lazy(),
            inputs.indicators,
            origins,
            weeks,
            _holidays(inputs, cfg, weeks * fc.WEEK),
            planned,
        )
    return fc.demand_rows(
        inputs.panel.lazy(),
        inputs.categories.lazy(),
        inputs.indicators,
        origins,
        horizon,
        _holidays(inputs, cfg, horizon),
        planned,
    )


def backtested_model(inputs: DemandInputs, cfg: MarketSettings) -> BacktestedModel:
    """Backtest on weekly rolling origins (each fold fitted only on targets before it), then fit
    the model on every target before ``inputs.as_of``."""
    if inputs.panel[fc.TARGET].sum() == 0:
        raise NotEnoughHistory(f"no purchases before {inputs.as_of}: nothing to forecast from")
    origins, backtest_origins = _origins(inputs, cfg)
    grain = demand_grain(inputs, cfg)
    rows = grain_rows(inputs, cfg, origins, grain)
    names = fc.feature_names(rows)
    cold_start = fc.needs_cold_start(rows, cfg.min_data_in_leaf)
    folds = [
        backtest_fold(inputs, rows, names, origin, cfg, cold_start).parts
        for origin in backtest_origins
    ]
    backtest = fc.backtest_table(folds)
    booster, phi = fc.fit_demand(rows, inputs.as_of, cfg)
    return BacktestedModel(
        booster=booster,
        phi=phi,
        names=names,
        rows=int(rows[fc.TARGET].is_not_null().sum()),
        origins=origins,
        backtest_origins=backtest_origins,
        backtest=backtest,
        metrics=_summary_metrics(backtest),
        newest_fold=(folds[-1][0], folds[-1][1]["model"]),
        cold_start=cold_start,
        grain=grain,
    )


@dataclass(frozen=True)
class Fold:
    """One origin of the demand backtest: its target rows, each forecaster's forecast, the MASE
    scales at item and category level, and the dispersion of the model fitted before it."""

    origin: date
    rows: pl.DataFrame
    predictions: dict[str, np.ndarray]
    item_scale: float
    category_scale: float
    phi: float

    @property
    def parts(self) -> tuple[pl.DataFrame, dict[str, np.ndarray], float, float]:
        """What ``fc.backtest_table`` reads of a fold."""
        return self.rows, self.predictions, self.item_scale, self.category_scale


def backtest_fold(
    inputs: DemandInputs,
    rows: pl.DataFrame,
    names: list[str],
    origin: date,
    cfg: MarketSettings,
    cold_start: bool,
) -> Fold:
    """A model fitted on the targets before ``origin``, its forecast of the days from it and
    the baselines' beside it."""
    booster, phi = fc.fit_demand(rows, origin, cfg)
    test = rows.filter((pl.col("origin") == origin) & pl.col(fc.TARGET).is_not_null())
    # predict() is typed for every input and mode (a list of sparse matrices for pred_contrib
    # on sparse input); a dense matrix without pred_contrib always gives an ndarray.
    model = cast(np.ndarray, booster.predict(fc.matrix(test, names), num_threads=2))
    predictions = {"model": fc.with_cold_start(test, model, cold_start)}
    predictions |= fc.baseline_forecasts(test)
    weekly = bool(test.height) and int(test["period_days"][0]) == fc.WEEK
    # MASE's yardstick at the rows' grain: the change of a day's (a week's) units in a week.
    item_value, category_value = ("units_7d", "_units_7d") if weekly else (fc.TARGET, "_units")
    item_scale = fc.naive_scale(inputs.panel.lazy(), origin, value=item_value)
    category_scale = fc.naive_scale(inputs.categories.lazy(), origin, "category", category_value)
    return Fold(origin, test, predictions, item_scale, category_scale, phi)


@dataclass(frozen=True)
class JudgedFold:
    """One origin of ``nightowl evaluate``'s demand backtest: per level (item, category), each
    forecaster's WAPE, MASE and bias over the horizon, the model's interval coverage, and the
    number of item-days (category-days) judged."""

    origin: date
    figures: dict[str, dict[str, dict[str, float | None]]]
    units: dict[str, int]


def measure_demand(
    wh: Warehouse, last_day: date, cfg: MarketSettings, origins: int
) -> list[JudgedFold]:
    """The demand backtest at ``origins`` weekly origins before ``last_day + 1``, each fold
    fitted only on the targets before it, judged fold by fold."""
    inputs = market_inputs(wh, last_day + timedelta(days=1), cfg)
    judged_at = cfg.model_copy(update={"backtest_origins": origins})
    train_origins, backtest_origins = _origins(inputs, judged_at)
    if inputs.panel[fc.TARGET].sum() == 0:
        raise NotEnoughHistory(f"no purchases before {inputs.as_of}: nothing to forecast from")
    rows = grain_rows(inputs, cfg, train_origins, demand_grain(inputs, cfg))
    names = fc.feature_names(rows)
    cold_start = fc.needs_cold_start(rows, cfg.min_data_in_leaf)
    judged = []
    for origin in backtest_origins:
        fold = backtest_fold(inputs, rows, names, origin, cfg, cold_start)
        table = fc.backtest_table([fold.parts])
        figures: dict[str, dict[str, dict[str, float | None]]] = {}
        for row in table:
            if row["horizon"] == "all":
                level = figures.setdefault(row["level"], {})
                level[row["forecaster"]] = {k: row[k] for k in ("wape", "mase", "bias")}
        actual = fold.rows[fc.TARGET].to_numpy()
        low, high = fc.interval(fold.predictions["model"], fold.phi, cfg.interval)
        inside = float(np.mean((actual >= low) & (actual <= high))) if len(actual) else None
        figures["item"]["model"]["coverage"] = inside
        categories = fc.category_sums(fold.rows, fold.predictions)
        units = {"item": fold.rows.height, "category": categories.height}
        judged.append(JudgedFold(origin, figures, units))
    return judged


def _summary_metrics(backtest: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """All-horizon scores per forecaster (item and category level) and the model's coverage."""
    metrics: dict[str, dict[str, float | None]] = {}
    for row in backtest:
        if row["horizon"] != "all":
            continue
        prefix = "" if row["level"] == "item" else "category_"
        entry = metrics.setdefault(row["forecaster"], {})
        for key in ("wape", "bias", "mase"):
            entry[prefix + key] = row[key]
    return metrics


def _challenge(
    registry: Registry, card: ModelCard, newest_fold: tuple[pl.DataFrame, np.ndarray]
) -> Verdict:
    """Whether the new model's newest backtest week is at least as good (WAPE) as the champion's
    on the same week — judged only when the champion never saw that week's sales; a model
    trained on less data than the champion (a past ``--date``) does not unseat it."""
    rows, new_prediction = newest_fold
    # Series.min() is typed as any Python scalar; origin is a pl.Date column, and the newest
    # fold has rows (the targets of the week before as_of are known): a date.
    week = cast(date, rows["origin"].min())

    def unfair(old: ModelCard) -> Verdict | None:
        if old.training["horizon_days"] != card.training["horizon_days"]:
            return True, f"champion {old.version} forecasts another horizon: promoted"
        if old.training.get("grain", "day") != card.training.get("grain", "day"):
            return True, f"champion {old.version} forecasts at another grain: promoted"
        if card.training["last_day"] < old.training["last_day"]:
            return False, (
                f"champion {old.version} is trained on sales up to {old.training['last_day']}, "
                f"later than this model's {card.training['last_day']}: champion kept"
            )
        if date.fromisoformat(old.training["last_day"]) >= week:
            return True, (
                f"champion {old.version} saw sales of the newest backtest week: no fair "
                "comparison, the newer model is promoted"
            )
        return None

    def duel(old: ModelCard) -> Verdict:
        old_sess = score.session(registry.onnx_bytes(MODEL, old.version), [score.CPU])
        old_units = score.predict(old_sess, fc.matrix(rows, old.feature_names), len(rows) or 1)
        old_prediction = fc.with_cold_start(
            rows, old_units.astype(np.float64), bool(old.training.get("cold_start"))
        )
        actual = rows[fc.TARGET].to_numpy()
        new_wape = fc.accuracy(actual, new_prediction, 1.0)["wape"]
        old_wape = fc.accuracy(actual, old_prediction, 1.0)["wape"]
        comparison = f"WAPE in the week from {week}: {new_wape:.4f} vs champion {old_wape:.4f}"
        # float32 (ONNX) against float64 (LightGBM) predictions: a tie may differ in the 7th
        # digit.
        wins = new_wape is None or old_wape is None or new_wape <= old_wape * (1 + 1e-6)
        return settle(comparison, wins)

    return challenge(registry, card, duel, unfair=unfair, first="first demand model: promoted")


# ---- forecasting ----------------------------------------------------------------------------


def forecast_tables(
    inputs: DemandInputs,
    cfg: MarketSettings,
    card: ModelCard,
    predict: Any,
    served: Served | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The item forecasts, their category sums and the price scenarios, from ``inputs.as_of``
    on; ``predict`` maps feature rows to expected units with ``card``'s model, or with the
    simple rule ``served`` in its place (labelled so, with the rule's own dispersion)."""
    horizon = int(card.training["horizon_days"])
    grain = str(card.training.get("grain", "day"))  # the grain the model was trained at
    rows = grain_rows(inputs, cfg, [inputs.as_of], grain, horizon, inputs.planned)

    cold_start = bool(card.training.get("cold_start"))

    def units(frame: pl.DataFrame) -> np.ndarray:
        return fc.with_cold_start(frame, predict(frame), cold_start)

    mean = units(rows)
    phi, coverage = float(card.training["dispersion"]), float(card.training["interval"])
    version = card.version
    if served is not None:
        phi, version = served.dispersion, served.version
    items = fc.item_forecast(rows, mean, phi, coverage, version)
    categories = fc.category_forecast(items, phi, coverage, version)
    scenarios = fc.price_scenarios(
        rows, mean, units, cfg.scenario_items, cfg.scenario_price_changes, version
    )
    return items, categories, scenarios


@dataclass(frozen=True)
class Served:
    """A simple rule forecasting in a demand model's place: its name, the label its rows carry
    (``rule:<rule>@<version>``) and the dispersion of its own backtest errors."""

    rule: str
    version: str
    dispersion: float


def forecasting_model(registry: Registry, as_of: date) -> ModelCard:
    """The champion, or for a past ``as_of`` the newest version trained on sales before it."""
    if registry.champion(MODEL) is None:
        raise NoChampion("no demand champion in the registry: train one first (nightowl train)")
    card = registry.trained_before(MODEL, as_of)
    if card is None:
        raise NoChampion(f"every demand model was trained on sales from {as_of} on or later")
    return card


def forecast_demand(
    wh: Warehouse, as_of: date, cfg: MarketSettings, scoring: ModelSettings | None = None
) -> ForecastReport:
    """Forecast every active item for the horizon from ``as_of``; publish the item and category
    forecasts and the price scenarios of the top items."""
    started = time.perf_counter()
    registry = Registry(wh)
    card = forecasting_model(registry, as_of)
    inputs = market_inputs(wh, as_of, cfg, int(card.training["horizon_days"]))
    served, provider, graph = None, "polars", RULE_GRAPH
    if card.serves_rule and card.guard is not None:  # the model did not beat it: the rule serves
        rule, version = card.serves_rule, rule_version(card)
        served = Served(rule, version, float(card.guard["dispersion"]))

        def predict(frame: pl.DataFrame) -> np.ndarray:
            return fc.baseline_forecasts(frame)[rule]
    else:
        scorer = score.scorer_for(registry, card, scoring or ModelSettings())
        version, provider, graph = card.version, scorer.provider, scorer.graph

        def predict(frame: pl.DataFrame) -> np.ndarray:
            return scorer.predict(fc.matrix(frame, card.feature_names))

    items, categories, scenarios = forecast_tables(inputs, cfg, card, predict, served)
    partition = {"as_of": as_of.isoformat()}
    refs = [
        *inputs.refs,
        InputRef(kind="model", name=f"models/{MODEL}/{card.version}", content_hash=card.version),
    ]
    stale = _stale_names(inputs.stale)
    for name in stale:
        log.warning("market indicator %s is stale: left out of tonight's forecast", name)
    stats = {
        "model_version": version,
        "provider": provider,
        "graph": graph,
        "stale_indicators": stale,
    }
    manifest = wh.write_partition(
        DEMAND_FORECAST.layer, DEMAND_FORECAST.name, partition, items, inputs=refs, stats=stats
    )
    for table, frame in ((CATEGORY_FORECAST, categories), (PRICE_SCENARIOS, scenarios)):
        wh.write_partition(table.layer, table.name, partition, frame, inputs=refs)
    return ForecastReport(
        as_of=as_of.isoformat(),
        rows=manifest.rows,
        content_hash=manifest.content_hash,
        category_rows=categories.height,
        scenario_rows=scenarios.height,
        model_version=version,
        provider=provider,
        graph=graph,
        stale_indicators=stale,
        seconds=round(time.perf_counter() - started, 3),
    )
