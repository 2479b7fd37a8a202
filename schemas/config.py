"""The run settings' sections: checks, models, market, feedback, recommendations, report, query.

Each section is a pydantic model with its defaults, defined here and only here; the settings
object built at the entry point (``nightowl.flows.settings``) holds one of each. How a landing
source's files map onto its contract is apart, in ``nightowl.schemas.sources``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nightowl.schemas.landing import SOURCES

#: The data checks of a source's run (tasks/ingest/checks.py), by the names `warn_only` uses.
CHECK_NAMES: tuple[str, ...] = ("freshness", "quarantine_share", "row_count", "null_share")


#: How the raw layer's Parquet parts may be compressed (Settings.raw_compression), and the default.
RawCompression = Literal["lz4", "snappy", "zstd", "uncompressed"]
RAW_COMPRESSION: RawCompression = "lz4"
#: Raw rows cleaned at once (Settings.clean_chunk_rows): about 1.5 GiB of events at the peak.
CLEAN_CHUNK_ROWS = 4_000_000
#: Rows dated more than this many days after the latest run date are quarantined, not held
#: (Settings.future_horizon_days).
FUTURE_HORIZON_DAYS = 366


class QuerySettings(BaseModel):
    """``nightowl query``."""

    timeout_seconds: float = Field(
        default=300, ge=0, description="A query running longer is stopped (0: no limit)."
    )


class CheckSettings(BaseModel):
    """Thresholds of the data checks that block a nightly run (or only warn)."""

    model_config = ConfigDict(extra="forbid")

    fresh_sources: list[str] = Field(
        default_factory=lambda: ["events"],
        description="Sources that must deliver a landing file for every run date.",
    )
    cadence_days: dict[str, int] = Field(
        default_factory=dict,
        description="Days between a fresh source's deliveries (events = 7 for a weekly export): "
        "freshness then wants a file within that many days. Unset: read off the dates of its "
        "newest files (daily when fewer than three).",
    )
    max_quarantine_share: float = Field(default=0.05, ge=0, le=1)
    quarantine_min_rows: int = Field(
        default=100, ge=0, description="Fewer rows read than this are too few to judge a share."
    )
    row_count_tolerance: float = Field(
        default=0.5, ge=0, description="Largest relative distance from the trailing median."
    )
    row_count_history: int = Field(default=7, ge=3, description="Earlier partitions compared.")
    row_count_min_rows: int = Field(
        default=100, ge=0, description="Below this trailing median, counts are too small to judge."
    )
    max_null_share: float = Field(
        default=0.25, ge=0, le=1, description="Of a required column in the day's partition."
    )
    warn_only: list[str] = Field(
        default_factory=list, description=f"Checks that only warn: {', '.join(CHECK_NAMES)}."
    )

    @field_validator("fresh_sources")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        return _known_names(value, SOURCES, "source")

    @field_validator("cadence_days")
    @classmethod
    def _known_cadences(cls, value: dict[str, int]) -> dict[str, int]:
        _known_names(list(value), SOURCES, "source")
        if any(days < 1 for days in value.values()):
            raise ValueError(f"cadences are whole days, at least 1: got {value}")
        return value

    @field_validator("warn_only")
    @classmethod
    def _known_checks(cls, value: list[str]) -> list[str]:
        return _known_names(value, CHECK_NAMES, "check")


def _known_names(value: list[str], known: tuple[str, ...] | list[str], what: str) -> list[str]:
    """``value`` if every name in it is one of ``known``; a ValueError naming the others."""
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; the {what}s are {list(known)}")
    return value


def rule_margin_field(served: str) -> Any:
    """The ``rule_margin`` setting of a model section: ``served`` says what is compared and what
    serves when the model does not win."""
    return Field(
        default=0.0,
        ge=-1,
        le=1,
        description=f"{served}. Negative: the model is kept unless it trails the rule by more "
        "than that.",
    )


class ModelSettings(BaseModel):
    """How the purchase-propensity model is trained, promoted and used for scoring."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(
        default=30, ge=1, description="Predict a purchase within this many days (the H in p_H)."
    )
    churn_lookback_days: int = Field(
        default=90, ge=1, description="Customers who bought within this look-back get churn_risk."
    )
    snapshots: int = Field(
        default=12, ge=1, description="Training snapshots (as_of dates) before the held-out one."
    )
    snapshot_step_days: int = Field(default=7, ge=1, description="Days between snapshots.")
    min_history_days: int = Field(
        default=28, ge=1, description="A snapshot needs this much event history before it."
    )
    retrain_every_days: int = Field(
        default=7, ge=1, description="The nightly flow retrains when the champion is this old."
    )
    validation_share: float = Field(
        default=0.2, gt=0, lt=1, description="Users held out of training for early stopping."
    )
    monotone: bool = Field(
        default=True,
        description="Constrain the model to rise with frequency, value and BG/NBD's figures and "
        "fall with recency (LightGBM monotone constraints).",
    )
    learning_rate: float = Field(default=0.05, gt=0)
    # Small trees with big leaves: purchase behaviour is noisy, and on the demo data (where the
    # best achievable AUC is known) they came closest to it.
    num_leaves: int = Field(default=7, ge=2)
    min_data_in_leaf: int = Field(default=200, ge=1)
    max_rounds: int = Field(default=2000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    seed: int = 7
    parity_tolerance: float = Field(
        default=1e-6, gt=0, description="Largest |ONNX - LightGBM| probability a model may show."
    )
    rule_margin: float = rule_margin_field(
        "The model is served only if its held-out ROC-AUC beats the best simple rule's "
        "(recency, RFM, BG/NBD) by more than this; otherwise that rule, calibrated to a "
        "probability, is served in its place"
    )
    risk_tiers: dict[str, float] = Field(
        default_factory=lambda: {"high": 0.8, "medium": 0.5},
        description="churn_risk at or above which a customer is in the tier (else low).",
    )
    score_batch_rows: int = Field(default=262_144, ge=1, description="Rows per ONNX run call.")
    score_bucket_users: int = Field(
        default=250_000,
        ge=1,
        description="Users per hash bucket when scoring fans out over workers ([runner] fanout).",
    )
    features_bucket_events: int = Field(
        default=10_000_000,
        ge=1_000,
        description="User features are computed a user-hash bucket of about this many events at "
        "a time: it bounds the features step's memory (same values).",
    )

    @field_validator("risk_tiers")
    @classmethod
    def _tiers_are_shares(cls, value: dict[str, float]) -> dict[str, float]:
        reserved = {"low", "lapsed", "prospect"} & set(value)
        if reserved:
            raise ValueError(f"tier names {sorted(reserved)} are built in; choose other names")
        outside = {k: v for k, v in value.items() if not 0 < v <= 1}
        if outside:
            raise ValueError(f"churn_risk thresholds are shares in (0, 1], got {outside}")
        return value

    provider: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when its libraries really load, else CPU."
    )
    graph: Literal["auto", "tree_ensemble", "tensorised"] = Field(
        default="auto",
        description="Which of a model's two ONNX graphs scores: auto runs the tensorised graph "
        "(plain tensor operators) on CUDA and the tree-ensemble graph on the CPU.",
    )
    gpu_batch_rows: int = Field(
        default=1_048_576, ge=1, description="Rows per ONNX run call on a GPU (IOBinding)."
    )


class MarketSettings(BaseModel):
    """Price position and the demand forecast: what counts as stale or an outlier, and the model."""

    model_config = ConfigDict(extra="forbid")

    price_outlier_ratio: float = Field(
        default=3.0,
        gt=1,
        description="A competitor price this many times above (or below 1/this of) the median of "
        "all competitors' prices for the item that day (three or more) is quarantined.",
    )
    competitor_max_staleness_days: int = Field(
        default=7, ge=0, description="A competitor price is carried forward this many days."
    )
    indicator_max_staleness_days: int = Field(
        default=7, ge=0, description="A market indicator is carried forward this many days."
    )
    horizon_days: int = Field(default=7, ge=1, le=28, description="Days ahead to forecast.")
    grain: Literal["auto", "day", "week"] = Field(
        default="auto",
        description="The grain demand is forecast and backtested at: day, or week (the units "
        "of the seven days ending on each target_date, for shops that export sales weekly); "
        "auto: week when nine tenths of the recent units land on one weekday, else day.",
    )
    holidays_country: str = Field(
        default="GB", description="Country (ISO 3166 code) whose public holidays are a feature."
    )
    holidays_subdivision: str | None = Field(
        default=None, description="Region within the country (e.g. 'ENG'), where it matters."
    )
    history_days: int = Field(
        default=365, ge=28, description="Forecast origins over this many past days train a model."
    )
    min_history_days: int = Field(
        default=35, ge=14, description="Days of sales history before the first training origin."
    )
    origin_step_days: int = Field(default=1, ge=1, description="Days between training origins.")
    max_training_rows: int = Field(
        default=4_000_000,
        ge=1000,
        description="Origins are spaced further apart when daily ones would make more rows "
        "(items x horizon each) than this: memory and training time stay bounded.",
    )
    backtest_origins: int = Field(
        default=4, ge=1, description="Weekly rolling origins of the backtest (the last weeks)."
    )
    rule_margin: float = rule_margin_field(
        "The model's forecast is served only if its backtest WAPE (item x day) "
        "beats the best simple rule's (seasonal naive, 28-day average) by more than this; "
        "otherwise that rule forecasts"
    )
    interval: float = Field(
        default=0.8, gt=0, lt=1, description="Coverage of the [lower, upper] prediction interval."
    )
    scenario_items: int = Field(
        default=50, ge=0, description="Top items (by forecast) that get price scenarios."
    )
    scenario_price_changes: list[float] = Field(
        default_factory=lambda: [-0.10, 0.0, 0.10],
        description="Relative changes of our price tried in price_scenarios.",
    )
    retrain_every_days: int = Field(default=7, ge=1)
    # Tweedie (compound Poisson-gamma) suits intermittent daily counts; on the demo data it beat
    # Poisson on WAPE in every backtest week, as did smaller trees with bigger leaves.
    objective: Literal["poisson", "tweedie"] = Field(
        default="tweedie", description="LightGBM objective for daily unit counts."
    )
    tweedie_variance_power: float = Field(default=1.5, gt=1, lt=2)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=15, ge=2)
    min_data_in_leaf: int = Field(default=400, ge=1)
    max_rounds: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    seed: int = 7
    parity_tolerance: float = Field(
        default=1e-5,
        gt=0,
        description="Largest |ONNX - LightGBM| / max(1, |LightGBM|) a forecast may show.",
    )

    @field_validator("holidays_country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        import holidays  # only when settings name a country: the package is big

        if value.upper() not in holidays.list_supported_countries():
            raise ValueError(f"holidays has no calendar for country {value!r}")
        return value.upper()


#: What the aspect tagger looks for: whole words or phrases, case-insensitive; a trailing "*"
#: matches any ending ("deliver*": delivery, delivered). `[feedback.aspects]` replaces it. The
#: order is the priority of a support ticket's topic: its first aspect in this order.
DEFAULT_ASPECTS: dict[str, list[str]] = {
    "quality": [
        "quality",
        "broke",
        "broken",
        "fell apart",
        "flimsy",
        "sturdy",
        "defect*",
        "damaged",
        "crack*",
        "crushed",
        "scratched",
        "durable",
        "finish",
        "stitching",
        "faulty",
    ],
    "size_fit": ["size*", "fit", "fits", "too small", "too big", "too large", "tight", "loose"],
    "app_bugs": [
        "app",
        "apps",
        "crash*",
        "bug*",
        "log in",
        "login",
        "logs me out",
        "password",
        "checkout",
        "notification*",
        "error*",
        "battery",
    ],
    "refund_payment": [
        "refund*",
        "charged",
        "charge",
        "payment*",
        "paid",
        "money back",
        "discount code",
        "invoice",
    ],
    "delivery": [
        "deliver*",
        "courier*",
        "shipping",
        "shipped",
        "arriv*",
        "parcel*",
        "package",
        "dispatch*",
        "tracking",
        "late",
        "lost in the post",
        "reschedul*",
    ],
    "price": [
        "price*",
        "pricey",
        "expensive",
        "cheap*",
        "cost*",
        "value",
        "overpriced",
        "discount*",
        "money",
    ],
    "packaging": ["packaging", "packed", "box", "boxes", "wrapping", "leak*"],
    "taste": ["taste*", "tasty", "flavor*", "flavour*", "delicious", "stale", "sweet", "bitter"],
    "support": [
        "support",
        "customer service",
        "reply",
        "replied",
        "respond*",
        "response",
        "helpful",
        "rude",
        "still waiting",
        "no answer",
    ],
}


class FeedbackSettings(BaseModel):
    """Sentiment, aspects, PII redaction and support triage of customer feedback."""

    model_config = ConfigDict(extra="forbid")

    min_labelled: int = Field(
        default=500,
        ge=10,
        description="Rated feedback texts needed to train the sentiment model; with fewer, the "
        "VADER lexicon scores feedback (and says so in sentiment_source).",
    )
    holdout_share: float = Field(
        default=0.2, gt=0, lt=1, description="Newest share of rated texts held out for metrics."
    )
    min_df: int = Field(default=2, ge=1, description="Documents a term needs to enter the model.")
    max_terms: int = Field(default=200_000, ge=100, description="Largest vocabulary kept.")
    c_grid: list[float] = Field(
        default_factory=lambda: [1.0, 3.0, 10.0, 30.0],
        min_length=1,
        description="Inverse regularisation strengths tried by cross-validation.",
    )
    rule_margin: float = rule_margin_field(
        "The model's labels are served only if their held-out macro-F1 beats the VADER "
        "lexicon's by more than this; otherwise the lexicon scores the feedback"
    )
    retrain_every_days: int = Field(default=7, ge=1)
    parity_tolerance: float = Field(
        default=1e-5, gt=0, description="Largest |ONNX - native| probability a model may show."
    )
    max_text_chars: int = Field(
        default=5000, ge=100, description="Clean text is cut here (counted; raw keeps it all)."
    )
    phone_region: str = Field(
        default="GB", description="Region (ISO 3166) of phone numbers written without +code."
    )
    history_days: int = Field(
        default=365, ge=1, description="feedback_scores covers feedback of this many past days."
    )
    window_days: int = Field(
        default=28, ge=1, description="Days of product_sentiment, and of each day's complaints."
    )
    top_complaints: int = Field(default=5, ge=1, description="Complaint phrases per product.")
    queue_days: int = Field(
        default=7, ge=1, description="Support tickets of this many past days are in the queue."
    )
    repeat_window_days: int = Field(
        default=14, ge=1, description="Contacts within this many days count as repeated."
    )
    faq: str | None = Field(
        default=None,
        description="FAQ knowledge base (Markdown with '## Question' headings, or CSV with "
        "question,answer), relative to the config file; none: no suggested answers.",
    )
    min_answer_similarity: float = Field(
        default=0.2, ge=0, le=1, description="Below this similarity no answer is suggested."
    )
    aspects: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ASPECTS.items()},
        description="Aspect → words or phrases that mention it (case-insensitive; a trailing * "
        "matches any ending).",
    )


class RecommendSettings(BaseModel):
    """Candidates, the LightGBM ranker and the nightly top-K lists of ``recommendations``."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=10, ge=1, le=100, description="Items per user in the output.")
    max_candidates: int = Field(
        default=200, ge=10, description="Candidates per user the ranker scores (the cap)."
    )
    active_days: int | None = Field(
        default=None,
        ge=1,
        description="Users with any event in this many past days get a list; unset (the "
        "default): everyone with an event in the history window, so lapsed customers get "
        "win-back lists too.",
    )
    browsing_days: int = Field(
        default=90,
        ge=1,
        description="Views and carts of this many past days tell a user's favourite categories.",
    )
    lapsed_days: int = Field(
        default=90,
        ge=1,
        description="A customer with no event in this many days is lapsed: their list's reasons "
        "say it is a win-back.",
    )
    history_days: int = Field(
        default=365, ge=28, description="Days of purchases candidates and features read."
    )
    half_life_days: float = Field(
        default=30,
        gt=0,
        description="Co-occurrence and popularity weigh a basket half as much "
        "after this many days.",
    )
    neighbours: int = Field(default=30, ge=1, description="Co-purchased items kept per item.")
    max_basket_items: int = Field(
        default=100, ge=2, description="Baskets with more distinct items do not count as pairs."
    )
    favourite_categories: int = Field(
        default=3, ge=1, description="A user's categories whose best sellers are candidates."
    )
    category_items: int = Field(default=30, ge=1, description="Best sellers per category.")
    trending_items: int = Field(default=30, ge=0, description="Globally trending candidates.")
    popular_items: int = Field(default=50, ge=1, description="Global best-seller candidates.")
    viewed_days: int = Field(
        default=30, ge=1, description="Items viewed or carted this recently are candidates."
    )
    exclude_bought: bool = Field(
        default=True,
        description="Leave out items the user already bought, unless they are repurchase items.",
    )
    repurchase_min_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="An item is a repurchase item when at least this share of its buyers bought "
        "it on two or more days (or the user did).",
    )
    bucket_users: int = Field(
        default=25_000, ge=100, description="Users per hash bucket: bounds memory per step."
    )
    group_events: int = Field(
        default=10_000_000,
        ge=1,
        description="Events (of the history window) per hash group of users whose views and "
        "carts are in memory at once while ranking: bounds memory on big shops.",
    )
    rule_margin: float = rule_margin_field(
        "The ranker's lists are served only if its held-out Recall@K (every "
        "earlier buyer, repurchases counted) beats the best simple rule's (popularity, repeat-buy, "
        "co-occurrence) by more than this; otherwise that rule ranks the lists"
    )
    horizon_days: int = Field(
        default=14, ge=1, description="Purchases in this many days after as_of are the labels."
    )
    snapshots: int = Field(default=2, ge=1, description="Training snapshots before the held-out.")
    snapshot_step_days: int = Field(default=7, ge=1, description="Days between snapshots.")
    min_history_days: int = Field(
        default=28, ge=1, description="Events needed before the first training snapshot."
    )
    max_training_users: int = Field(
        default=20_000, ge=100, description="Users (with a purchase to learn from) per snapshot."
    )
    max_holdout_users: int = Field(
        default=50_000,
        ge=100,
        description="Active users (a stable sample) the held-out snapshot judges a ranker on: "
        "those of them who bought in the window are the ones judged.",
    )
    retrain_every_days: int = Field(default=7, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_data_in_leaf: int = Field(default=50, ge=1)
    max_rounds: int = Field(default=500, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    validation_share: float = Field(
        default=0.2, gt=0, lt=1, description="Training users early stopping watches."
    )
    seed: int = 7
    parity_tolerance: float = Field(
        default=1e-5, gt=0, description="Largest |ONNX - LightGBM| score (relative above 1)."
    )


class EvaluateSettings(BaseModel):
    """``nightowl evaluate``: the rolling-origin backtest of every model beside its simple rules."""

    model_config = ConfigDict(extra="forbid")

    origins: int = Field(
        default=3,
        ge=1,
        le=52,
        description="Past origins each model is trained before and judged after.",
    )
    origin_step_days: int = Field(
        default=14,
        ge=1,
        description="Days between the propensity and recommender origins (demand origins are a "
        "week apart, sentiment origins equal slices of the newest rated texts).",
    )
    margin: float = Field(
        default=0.0,
        ge=0,
        description="A model beats a rule in the verdicts only by more than this, on the primary "
        "metric (ROC-AUC, Recall@K, WAPE, macro-F1).",
    )


class HealthSettings(BaseModel):
    """The nightly ``model-health`` step: served predictions judged once their outcomes are in,
    input drift against each champion's training data, and the alerts both raise."""

    model_config = ConfigDict(extra="forbid")

    lookback_days: int = Field(
        default=90,
        ge=1,
        description="Served nights this far back are judged (and re-judged when their inputs "
        "change); older ones keep the figures they have.",
    )
    rating_lag_days: int = Field(
        default=7,
        ge=0,
        description="Days a night's new feedback waits for late ratings before its served "
        "sentiment labels are judged against them.",
    )
    calibration_bins: int = Field(
        default=10, ge=2, le=50, description="Equal-width bins of the reliability curve."
    )
    drift_bins: int = Field(
        default=10, ge=2, le=50, description="Quantile bins of the population stability index."
    )
    psi_threshold: float = Field(
        default=0.25,
        gt=0,
        description="An input or score whose PSI against the champion's training data is above "
        "this has drifted (0.1: worth a look, 0.25: a different population, by convention).",
    )
    missing_threshold: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="An input whose share of missing values rose by more than this has drifted.",
    )
    drift_exempt: list[str] = Field(
        default_factory=list,
        description="Columns measured but never flagged as drifted: those that move by design "
        "(tenure in a young shop grows every night).",
    )
    losing_nights: int = Field(
        default=3,
        ge=1,
        description="Alert when a model's served predictions lose to its best simple rule on "
        "matured outcomes for this many served nights in a row.",
    )


class ReportSettings(BaseModel):
    """The report tables (``kpi_daily``, ``segments``, ``at_risk_customers``,
    ``product_health``, ``campaign_briefs``) and the HTML page built from them."""

    model_config = ConfigDict(extra="forbid")

    kpi_days: int = Field(
        default=56, ge=8, description="Days of kpi_daily per as_of (the trend charts' span)."
    )
    value_days: int = Field(
        default=365, ge=7, description="Days of purchases a customer's value is summed over."
    )
    at_risk_customers: int = Field(
        default=100, ge=1, description="Customers in at_risk_customers (top by value x risk)."
    )
    product_days: int = Field(
        default=28, ge=8, description="Days of sales and feedback product_health reads."
    )
    price_gap_pct: float = Field(
        default=15, gt=0, description="product_health flags prices this much above the median."
    )
    demand_change_pct: float = Field(
        default=30, gt=0, description="product_health flags forecasts this much below last week."
    )
    min_units: float = Field(
        default=10, ge=0, description="Units sold in 7 days before a falling forecast is flagged."
    )
    negative_share: float = Field(
        default=0.4, gt=0, le=1, description="product_health flags this share of negative feedback."
    )
    min_feedback: int = Field(
        default=3, ge=1, description="Feedback an item needs before its sentiment is flagged."
    )
    brief_items: int = Field(default=5, ge=1, description="Recommended items per campaign brief.")
    brief_words: int = Field(default=6, ge=1, description="Customer phrases per campaign brief.")
    send_time_days: int = Field(
        default=90, ge=7, description="Days of activity the suggested send time is read from."
    )
    brief_writer: str = Field(
        default="template",
        description="Writes the briefs' copy: 'template' (no network), or 'package.module:Class' "
        "for your own (a text model), constructed with no arguments.",
    )
