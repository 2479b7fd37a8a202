"""Deterministic synthetic landing data for a small online shop ("startup shop").

``generate_landing(out, end_date=...)`` writes what a real shop's nightly exports would drop into
the landing folder: one file per source per day, for the ``days`` days ending at ``end_date``::

    out/events/YYYY-MM-DD.csv                event_id, user_id, session_id, event_time, event_type,
                                             item_id, quantity, price, order_id, channel, device
    out/items/YYYY-MM-DD.jsonl               item_id, title, category, brand, price, created_at,
                                             active
    out/feedback/YYYY-MM-DD.jsonl            feedback_id, user_id, item_id, rating, title, text,
                                             channel, created_at
    out/market_prices/YYYY-MM-DD.parquet     date, item_id, competitor, price, currency, in_stock
    out/market_indicators/YYYY-MM-DD.csv.gz  date, indicator, value, dimension
    out/_truth/purchase_probability.parquet  user_id, p_purchase  (not a landing source)
    out/_truth/feedback_labels.parquet       feedback_id, channel, topic, urgent, true_sentiment
    out/knowledge_base/faq.md                the shop's FAQ: support_queue's suggested answers
    out/_truth/planted_pii.parquet           feedback_id, kind, value (contact details in texts)
    out/_truth/truth.json                    evaluation window, seed, sizes, constants

The first items file holds every item that exists on the first day; later items files hold only
items launched that day and items whose price or ``active`` flag changed that day (about 12 % of
items launch mid-period). Event times are ISO 8601 with an offset: ``+00:00`` normally, ``Z`` for
every row of about 10 % of the days' files, and ``+01:00`` (same instant, shown one hour later) on
about 1 % of rows. Everything is a pure function of the arguments: numpy ``PCG64(seed)`` streams,
no wall clock, so the same arguments give byte-identical files.

Planted signals
---------------
* Recency and frequency. Each user has a latent visit propensity ``a ~ N(-3.1, 0.8)`` clipped
  to [-6, -1] and a per-view conversion rate ``c = min(0.5, 0.05 * exp(0.35 z + 0.45 e))``
  (``z`` the standardised propensity, so frequent visitors also convert better). The state is
  ``h`` (purchase days, decayed by 0.9 a day), ``v`` (visit days, decayed by 0.85 a day) and
  ``r`` (days since the last visit). Daily visit probability is
  ``sigmoid(a + 0.9 log1p(h) + 0.5 log1p(v) - 0.05 min(r, 28) + 0.25 [Saturday or Sunday])``.
  ``activity`` (default 1) adds ``log(activity)`` to every ``a`` and its clip range: users visit
  more often (over 90 days about 22 events per user at 1, 87 at 3, 138 at 5), with the same
  signals.
  A visit has ``1 + Poisson(lam)`` views (``lam = 2 exp(0.4 e)`` per user); each view buys the
  viewed item with probability ``c * f(item, day)``. So purchase probability rises with recent
  purchase and visit frequency and decays with days since the last activity. The state starts
  from a 28-day burn-in, so the first day already has recent and lapsed users.
* Category preference. Each user prefers 1-3 of the 12 categories (35 % / 40 % / 25 %); a view's
  category is drawn 85 % from the favourites (random weights) and 15 % uniformly, and the item
  within the category by item popularity (log-normal) among items that are launched and active.
* Price position. Four competitors each list about 85 % of items, priced around the item's market
  price (fixed per item and competitor offset ~N(1, 0.05), redrawn about monthly, plus 1 % daily
  noise); market prices drift per category. Our price is ``market * markup``, the markup redrawn
  for each item about every 15 days: 70 % from U(0.86, 1.00), 30 % from U(1.08, 1.30). When our
  price is strictly above the median of that day's competitor prices for the item (all listed
  competitors, in stock or not, exactly as written to ``market_prices``), the item's purchase
  probability per view is multiplied by ``OVERPRICED_FACTOR = 0.5`` (``f`` above; otherwise 1).
* Promotions. An item not on promotion starts one with probability ``PROMOTION_START_P`` = 0.4 %
  a day (about 3 % of items are on promotion at any time); it lasts ``PROMOTION_DAYS`` = 7 days,
  is announced in the items file of its first day (``promotion: true``) and withdrawn in that of
  the day after its last (``promotion: false``). It leaves the price alone and multiplies the
  purchase probability per view by ``PROMOTION_FACTOR = 1.6`` (so ``f`` is the product of both
  factors). Promotions draw from their own random stream: the other signals are as without them.
* Item quality. Each item has a latent quality (10 % are lemons, quality ~N(2.2, 0.5), the rest
  ~N(4.1, 0.5)). Review ratings are ``round(quality + N(0, 0.9))`` clipped to 1-5; purchases are
  returned (2-14 days later) with probability 0.03 + 0.12 for lemons and reviewed (1-10 days
  later) with probability 0.20 + 0.15 for lemons.
* Text follows rating. Review text = opener + body + closer chosen from positive (rating 4-5),
  mixed (3) or negative (1-2) phrase banks (12-15 x 10-15 x 6-8 combinations per sentiment) with
  the item's product noun and a category-specific aspect (e.g. "battery life", "fit") filled in.
  Support tickets (channel ``support``, no rating) have one topic: delivery, refund, payment,
  login_app, size_fit or damaged, and are urgent with a topic-dependent probability (payment
  50 %, refund 40 %, delivery 35 %, damaged 30 %, login_app 20 %, size_fit 10 %); urgent tickets
  contain "urgent", "still waiting", "third time" or (payment only) "charged twice". Survey and
  app-store feedback text also follows its rating. Daily volumes: support tickets 0.1 % of users
  (weighted towards recent buyers, about the item they last bought), surveys 0.06 %, app-store
  reviews 0.04 % (no user_id). ``_truth/feedback_labels.parquet`` holds the true topic, urgency
  and sentiment.
* Weekly seasonality. Weekends add 0.25 to the visit log-odds and shift sessions later in the
  day; ad cost per click and search trends also have a weekly pattern.

Truth. Within the evaluation window (the last ``eval_days`` days) each user's visit log-odds is
frozen at its value at the window start (plus the weekend term), so given the realised catalogue
and prices (which never depend on users) the days are independent and
``p_purchase = 1 - prod_t (1 - p_visit(t) * P(buy | visit, t))`` exactly, where
``P(buy | visit, t) = 1 - x exp(lam (x - 1))`` with ``x = 1 - c * sum_k w_k fbar_k(t)``, ``w`` the
user's category weights and ``fbar_k(t)`` the popularity-weighted mean price factor ``f`` of the
available items in category ``k``. It is the probability of at least one (clean) purchase event
in the window, clipped to [1e-12, 1 - 1e-12] so that log-loss stays finite.

Dirt (rates are per event row of a day's file unless noted; counts are in the summary)
-------------------------------------------------------------------------------------
* ``duplicate_event``: 0.5 % exact copies of a row (same event_id), at random positions.
* ``bad_event_time``: 0.1 % event_time replaced by "not-a-date", "31/02/YYYY 25:00", "yesterday"
  or "YYYY-13-45T10:00:00+00:00".
* ``future_event_time``: 0.02 % event_time moved to year 2099 (same month, day, time).
* ``bad_quantity``: 0.1 % (chosen among purchase rows) quantity "two".
* ``negative_price``: 0.1 % (among purchase rows) price negated.
* ``missing_user_id``: 0.1 % (among purchase rows) user_id empty.
* ``unknown_event_type``: 0.5 % extra rows copying a view with event_type "wishlist", "share" or
  "compare" (new event_id).
* ``late_event``: 1 % of a day's clean rows are written at the end of the NEXT day's file with
  their original event_time (none from the last day).
* ``feedback_bad_rating``: 0.5 % of review/survey feedback rows have rating 7.
* ``feedback_empty``: 0.5 % of feedback rows have empty text and no rating.
Dirty rows are disjoint: a row gets at most one kind, and late rows are clean.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from nightowl.schemas.landing import CONTRACTS, SOURCES
from nightowl.warehouse.landing import KNOWLEDGE_BASE_DIR

# --- vocabulary -------------------------------------------------------------------------------

# Landing files carry exactly the contract's columns, in the contract's order.
EVENT_COLUMNS = tuple(CONTRACTS["events"].names)
ITEM_COLUMNS = tuple(CONTRACTS["items"].names)
FEEDBACK_COLUMNS = tuple(CONTRACTS["feedback"].names)
MARKET_PRICE_COLUMNS = tuple(CONTRACTS["market_prices"].names)
INDICATOR_COLUMNS = tuple(CONTRACTS["market_indicators"].names)

EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "return")
VIEW, ADD, REMOVE, PURCHASE, RETURN = range(5)
UNKNOWN_EVENT_TYPES = ("wishlist", "share", "compare")
CHANNELS = ("direct", "search", "email", "social", "ads")
CHANNEL_P = (0.35, 0.3, 0.12, 0.1, 0.13)
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_P = (0.6, 0.33, 0.07)
COMPETITORS = ("PriceHub", "ShopFast", "ValueMart", "BargainBay")
FEEDBACK_CHANNELS = ("review", "support", "survey", "app_store")
SUPPORT_TOPICS = ("delivery", "refund", "payment", "login_app", "size_fit", "damaged")
SUPPORT_TOPIC_P = (0.3, 0.2, 0.12, 0.12, 0.12, 0.14)
SUPPORT_URGENT_P = (0.35, 0.4, 0.5, 0.2, 0.1, 0.3)

CATEGORIES = (
    "Electronics",
    "Home & Kitchen",
    "Fashion",
    "Beauty",
    "Sports & Outdoors",
    "Toys & Games",
    "Books",
    "Grocery",
    "Garden",
    "Pet Supplies",
    "Health",
    "Office",
)
CATEGORY_WEIGHT = (1.4, 1.2, 1.5, 1.0, 0.9, 0.8, 0.8, 0.9, 0.6, 0.7, 0.7, 0.6)
CATEGORY_BASE_PRICE = (90.0, 40.0, 45.0, 18.0, 35.0, 25.0, 12.0, 8.0, 30.0, 28.0, 22.0, 30.0)
CATEGORY_NOUNS = (
    ("headphones", "speaker", "charger", "smartwatch"),
    ("kettle", "blender", "frying pan", "knife set"),
    ("jacket", "trainers", "jeans", "dress"),
    ("moisturiser", "serum", "lipstick", "hair dryer"),
    ("yoga mat", "tent", "running shorts", "water bottle"),
    ("board game", "puzzle", "building set", "plush toy"),
    ("novel", "cookbook", "biography", "travel guide"),
    ("coffee beans", "olive oil", "granola", "tea"),
    ("hose", "planter", "pruning shears", "bird feeder"),
    ("dog bed", "cat tree", "lead", "pet food"),
    ("vitamins", "massage gun", "thermometer", "first aid kit"),
    ("desk lamp", "notebook", "office chair", "pen set"),
)
CATEGORY_ASPECTS = (
    ("battery life", "sound quality", "build quality"),
    ("finish", "size", "build quality"),
    ("fit", "fabric", "stitching"),
    ("scent", "texture", "packaging"),
    ("grip", "durability", "weight"),
    ("instructions", "pieces", "durability"),
    ("story", "writing", "print quality"),
    ("taste", "freshness", "packaging"),
    ("durability", "size", "finish"),
    ("size", "durability", "materials"),
    ("effectiveness", "instructions", "packaging"),
    ("comfort", "build quality", "finish"),
)
BRANDS = (
    "Nordic",
    "Acme",
    "Brightly",
    "Oakwell",
    "Lumen",
    "Kestrel",
    "Bramble",
    "Vantage",
    "Corvid",
    "Halcyon",
    "Tidewater",
    "Foxglove",
    "Meridian",
    "Ironbark",
    "Pebble",
    "Solace",
    "Quill",
    "Harbour",
    "Everly",
    "Zephyr",
)
ADJECTIVES = (
    "Classic",
    "Pro",
    "Eco",
    "Compact",
    "Deluxe",
    "Essential",
    "Ultra",
    "Smart",
    "Everyday",
    "Premium",
    "Lite",
    "Signature",
)

# Phrase banks, indexed by sentiment: 0 negative (rating 1-2), 1 mixed (3), 2 positive (4-5).
# "{p}" is replaced by the product noun and "{a}" by a category aspect.
REVIEW_OPENERS = (
    (
        "Really disappointed with this {p}.",
        "Do not buy this {p}.",
        "Not happy at all.",
        "Waste of money.",
        "Terrible {p}.",
        "Very poor quality.",
        "This {p} broke within a week.",
        "Regret buying this.",
        "Not as described.",
        "Awful experience.",
        "One star, and that's generous.",
        "Cheap and nasty {p}.",
    ),
    (
        "It's okay.",
        "Decent {p}, but not perfect.",
        "Mixed feelings about this {p}.",
        "Average at best.",
        "Not bad, not great.",
        "Does the job.",
        "It's fine for the price.",
        "Reasonable {p}.",
        "Three stars.",
        "Some good points, some bad.",
    ),
    (
        "Absolutely love this {p}.",
        "Really happy with my new {p}.",
        "Great {p}, exactly as described.",
        "Five stars from me.",
        "Brilliant purchase.",
        "This {p} exceeded my expectations.",
        "So glad I bought this.",
        "Excellent quality for the price.",
        "Fantastic {p}!",
        "Would buy this {p} again.",
        "Very impressed.",
        "Lovely {p}, arrived quickly.",
    ),
)
REVIEW_BODIES = (
    (
        "The {a} is really poor.",
        "The {a} fell apart almost immediately.",
        "It arrived damaged and the box was crushed.",
        "It stopped working after a few days.",
        "The {a} is nothing like the photos.",
        "Far too expensive for what you get.",
        "It feels flimsy and cheap.",
        "The {a} is a real letdown.",
        "Had to send it back.",
        "Customer service never replied.",
        "It doesn't do what it says.",
        "Worse than the cheaper one I had before.",
        "The {a} is awkward and badly made.",
        "Parts were missing from the box.",
        "Delivery took forever.",
    ),
    (
        "The {a} is fine but nothing special.",
        "The {a} could be better.",
        "Good value, but the {a} lets it down.",
        "Works, though it feels a bit cheap.",
        "Took a while to arrive but it works.",
        "Smaller than I expected.",
        "Nice design, average {a}.",
        "Does what it should, no more.",
        "The {a} is decent, delivery was slow.",
        "Okay for occasional use.",
        "Packaging was poor but the item is fine.",
        "Bit overpriced for what it is.",
    ),
    (
        "The {a} is excellent.",
        "The {a} is much better than I expected.",
        "Delivery was fast and the packaging was neat.",
        "It works perfectly and looks great.",
        "Great value for money.",
        "I use it every day and it still feels new.",
        "The {a} is spot on.",
        "Easy to set up and use.",
        "Feels really well made.",
        "Much better than the one I had before.",
        "The {a} really stands out.",
        "My partner loves it too.",
        "Arrived a day early and in perfect condition.",
        "Does exactly what it says.",
        "Quality is superb, especially the {a}.",
    ),
)
REVIEW_CLOSERS = (
    (
        "Avoid.",
        "Returning it.",
        "I want a refund.",
        "Very disappointed.",
        "Would not recommend.",
        "Never again.",
        "Save your money.",
        "Shame, it looked nice.",
    ),
    (
        "Might buy again.",
        "Probably wouldn't buy again.",
        "It'll do.",
        "Fine for now.",
        "Expected a bit more.",
        "Okay overall.",
    ),
    (
        "Highly recommend.",
        "Will definitely order again.",
        "Thank you!",
        "Couldn't be happier.",
        "Recommended to all my friends.",
        "Top marks.",
        "Worth every penny.",
        "Love it.",
    ),
)
REVIEW_TITLES = (
    (
        "Disappointed",
        "Poor quality",
        "Broke quickly",
        "Not as described",
        "Avoid",
        "Waste of money",
    ),
    ("It's okay", "Average", "Does the job", "Could be better", "Mixed feelings"),
    ("Love it", "Great value", "Excellent", "Highly recommended", "Very happy", "Perfect"),
)
SURVEY_TEXTS = (
    (
        "Delivery is too slow.",
        "Prices went up recently.",
        "Hard to find anything on the site.",
        "Support took ages to answer.",
        "Too many emails.",
    ),
    (
        "Fine overall.",
        "Good range but slow delivery.",
        "Okay, could be cheaper.",
        "Nothing special.",
        "Sometimes good, sometimes not.",
    ),
    (
        "Easy to find what I needed.",
        "Great prices and quick delivery.",
        "Love the range.",
        "Checkout was quick.",
        "Friendly support team.",
    ),
)
APP_TEXTS = (
    (
        "App keeps crashing at checkout.",
        "Can't log in since the update.",
        "Slow and buggy.",
        "Drains my battery.",
        "Search doesn't work in the app.",
    ),
    (
        "Decent app but a bit slow.",
        "Works mostly, some bugs.",
        "Okay but the old version was better.",
        "Fine, needs a dark mode.",
        "Good but logs me out a lot.",
    ),
    (
        "Smooth app, easy checkout.",
        "Love the new app design.",
        "Fast and reliable app.",
        "Great app for quick orders.",
        "Notifications are actually useful.",
    ),
)
SURVEY_RATING_P = (0.05, 0.07, 0.15, 0.38, 0.35)
APP_RATING_P = (0.14, 0.08, 0.12, 0.26, 0.40)
SUPPORT_SUBJECTS = (
    ("Where is my order?", "Late delivery", "Parcel not arrived"),
    ("Refund request", "Still no refund", "Return and refund"),
    ("Payment problem", "Double charge", "Card declined"),
    ("Can't log in", "App keeps crashing", "Password reset not working"),
    ("Wrong size", "Exchange for a different size", "Sizing issue"),
    ("Item arrived damaged", "Broken on arrival", "Damaged parcel"),
)
SUPPORT_BODIES = (
    (
        "My {p} was due three days ago and still hasn't arrived.",
        "Tracking says delivered but there is no parcel.",
        "The courier keeps rescheduling my delivery of the {p}.",
        "My order is stuck in transit.",
        "I paid for next-day delivery and the {p} is still not here.",
    ),
    (
        "I returned the {p} two weeks ago and have not had my refund.",
        "Please refund my order, the {p} went back last week.",
        "When will my refund for the {p} be processed?",
        "You confirmed the return but no money yet.",
        "I was refunded the wrong amount for the {p}.",
    ),
    (
        "My card was declined but the money left my account.",
        "I was billed for an order I cancelled.",
        "Checkout fails at the payment step.",
        "The discount code was not applied to my payment.",
        "There is an unknown charge on my statement.",
    ),
    (
        "I can't log in to my account.",
        "The app crashes every time I open my basket.",
        "The password reset email never arrives.",
        "The app logs me out at checkout.",
        "I get an error when I try to sign in.",
    ),
    (
        "The {p} is far too small, I need a bigger size.",
        "The size chart is wrong, the {p} doesn't fit.",
        "Can I swap the {p} for a smaller size?",
        "The {p} fits badly around the shoulders.",
        "Ordered my usual size and the {p} is huge.",
    ),
    (
        "The {p} arrived broken.",
        "The box was crushed and the {p} is scratched.",
        "My {p} arrived with a crack in it.",
        "Parts of the {p} were snapped in the packaging.",
        "The {p} was leaking when it arrived.",
    ),
)
URGENCY_PHRASES = (
    "This is urgent.",
    "URGENT, please help.",
    "I'm still waiting for a reply.",
    "Still waiting after a week.",
    "This is the third time I've contacted you.",
    "Third time asking now.",
)
PAYMENT_URGENCY_PHRASES = ("I've been charged twice!", "You charged me twice for the same order.")
SUPPORT_CLOSERS = ("Please help.", "Thanks.", "Can someone get back to me?", "Regards.", "")
BAD_EVENT_TIMES = ("not-a-date", "31/02/{y} 25:00", "yesterday", "{y}-13-45T10:00:00+00:00")

# --- simulation constants (quoted in the module docstring) ------------------------------------

VISIT_BASE, VISIT_SPREAD = -3.1, 0.8
VISIT_INTERCEPT_RANGE = (-6.0, -1.0)
P_PURCHASE_RANGE = (1e-12, 1.0 - 1e-12)
FREQUENCY_COEF, PURCHASE_DECAY = 0.9, 0.9
ACTIVITY_COEF, VISIT_DECAY = 0.5, 0.85
RECENCY_COEF, RECENCY_CAP = 0.05, 28
WEEKEND_BOOST = 0.25
CONVERSION_MEDIAN, CONVERSION_CAP = 0.05, 0.5
CONVERSION_PROPENSITY_COEF, CONVERSION_SPREAD = 0.35, 0.45
EXTRA_VIEWS_MEAN, EXTRA_VIEWS_SPREAD = 2.0, 0.4
FAVOURITE_SHARE = 0.85
OVERPRICED_FACTOR = 0.5
OVERPRICED_SHARE = 0.3
PROMOTION_START_P, PROMOTION_DAYS, PROMOTION_FACTOR = 0.004, 7, 1.6
PRICE_CHANGE_P = 1 / 15
COMPETITOR_CHANGE_P = 1 / 30
COMPETITOR_LISTS_P = 0.85
OUT_OF_STOCK_P = 0.06
MID_PERIOD_LAUNCH_SHARE = 0.12
LEMON_SHARE = 0.1
BURN_IN_DAYS = 28
CART_WITHOUT_PURCHASE_P, REMOVE_P = 0.12, 0.45
RETURN_RULE = (0.03, 0.12, (2, 14))  # P(return), extra P for lemons, delay range in days
REVIEW_RULE = (0.2, 0.15, (1, 10))  # P(review), extra P for lemons, delay range in days
SUPPORT_PER_USER_DAY = 0.001
SURVEY_PER_USER_DAY = 0.0006
APP_REVIEW_PER_USER_DAY = 0.0004
ZULU_FILE_P = 0.1
PLUS_ONE_ROW_P = 0.01
DIRT_RATES = {
    "duplicate_event": 0.005,
    "bad_event_time": 0.001,
    "future_event_time": 0.0002,
    "bad_quantity": 0.001,
    "negative_price": 0.001,
    "missing_user_id": 0.001,
    "unknown_event_type": 0.005,
    "late_event": 0.01,
    "feedback_bad_rating": 0.005,
    "feedback_empty": 0.005,
}
HOUR_WEIGHTS_WEEKDAY = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.2,
        2.5,
        3.5,
        3.5,
        3.2,
        3.3,
        4.0,
        3.6,
        3.2,
        3.2,
        3.4,
        3.8,
        4.5,
        5.5,
        6.0,
        5.5,
        4.0,
        2.2,
    ]
)
HOUR_WEIGHTS_WEEKEND = np.array(
    [
        1.5,
        1.0,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.0,
        2.0,
        3.5,
        4.5,
        5.0,
        5.2,
        5.0,
        4.8,
        4.6,
        4.6,
        4.8,
        5.0,
        5.5,
        5.8,
        5.2,
        4.0,
        2.5,
    ]
)
EPOCH = date(1970, 1, 1)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate_landing`` wrote: files, data rows per source, dirt counts, truth."""

    out: Path
    files: tuple[Path, ...]
    rows: dict[str, int]
    dirt: dict[str, int]
    truth_path: Path
    window_start: date
    window_end: date


@dataclass(frozen=True)
class _Users:
    """Static per-user parameters."""

    visit_intercept: np.ndarray
    conversion: np.ndarray
    extra_views: np.ndarray
    category_weights: np.ndarray
    preferred_device: np.ndarray


@dataclass(frozen=True)
class _Items:
    """Static per-item attributes."""

    category: np.ndarray
    noun: np.ndarray
    title: np.ndarray
    brand: np.ndarray
    base_price: np.ndarray
    popularity: np.ndarray
    quality: np.ndarray
    launch_day: np.ndarray
    created_at: np.ndarray


@dataclass
class _Market:
    """Mutable day-to-day item and market state."""

    category_level: np.ndarray
    our_price: np.ndarray
    active: np.ndarray
    competitor_offset: np.ndarray
    listed: np.ndarray
    #: Days left of each item's promotion (0: not on promotion).
    promotion_days: np.ndarray
    fx: float = 1.27
    cpc_noise: float = 0.0
    trend_noise: np.ndarray = field(default_factory=lambda: np.zeros(len(CATEGORIES)))


@dataclass
class _UserState:
    """Mutable per-user recency/frequency state."""

    purchase_heat: np.ndarray
    visit_heat: np.ndarray
    days_since_visit: np.ndarray
    last_item: np.ndarray


# --- pure helpers -----------------------------------------------------------------------------


def period_dates(end_date: date, days: int) -> list[date]:
    """Return the ``days`` consecutive dates ending at ``end_date`` inclusive."""
    return [end_date - timedelta(days=days - 1 - k) for k in range(days)]


def is_weekend(day: date) -> bool:
    """Return whether ``day`` is a Saturday or Sunday."""
    return day.weekday() >= 5


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Return the logistic function of ``x``."""
    return 1.0 / (1.0 + np.exp(-x))


def visit_log_odds(
    intercept: np.ndarray, purchase_heat: np.ndarray, visit_heat: np.ndarray, days_since: np.ndarray
) -> np.ndarray:
    """Return each user's daily visit log-odds (before the weekend term) from their state."""
    return (
        intercept
        + FREQUENCY_COEF * np.log1p(purchase_heat)
        + ACTIVITY_COEF * np.log1p(visit_heat)
        - RECENCY_COEF * np.minimum(days_since, RECENCY_CAP)
    )


def purchase_given_visit(
    conversion: np.ndarray, extra_views: np.ndarray, mean_factor: np.ndarray
) -> np.ndarray:
    """Return P(at least one purchase | visit) for 1 + Poisson(extra_views) independent views."""
    x = 1.0 - conversion * mean_factor
    return 1.0 - x * np.exp(extra_views * (x - 1.0))


def price_factor(our_price: np.ndarray, competitor_median: np.ndarray) -> np.ndarray:
    """Return the per-item demand multiplier: OVERPRICED_FACTOR above the competitor median."""
    return np.where(our_price > competitor_median, OVERPRICED_FACTOR, 1.0)


def promotion_factor(on_promotion: np.ndarray) -> np.ndarray:
    """Return the per-item demand multiplier of a running promotion."""
    return np.where(on_promotion, PROMOTION_FACTOR, 1.0)


def competitor_median(competitor_price: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Return each item's median price over the competitors that list it."""
    return np.nanmedian(np.where(listed, competitor_price, np.nan), axis=1)


def category_mean_factor(
    category: np.ndarray, available: np.ndarray, popularity: np.ndarray, factor: np.ndarray
) -> np.ndarray:
    """Return per category the popularity-weighted mean price factor of available items."""
    weight = popularity * available
    total = np.bincount(category, weights=weight, minlength=len(CATEGORIES))
    factored = np.bincount(category, weights=weight * factor, minlength=len(CATEGORIES))
    return factored / total


def markups(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return ``n`` fresh price markups over market: 30 % above it, the rest at or below it."""
    above = rng.random(n) < OVERPRICED_SHARE
    return np.where(above, rng.uniform(1.08, 1.30, n), rng.uniform(0.86, 1.00, n))


def conversion_rate(z: np.ndarray | float, e: np.ndarray | float) -> np.ndarray:
    """Return the per-view conversion rate of a user with standardised propensity ``z`` and
    conversion draw ``e``."""
    exponent = CONVERSION_PROPENSITY_COEF * z + CONVERSION_SPREAD * e
    return np.minimum(CONVERSION_CAP, CONVERSION_MEDIAN * np.exp(exponent))


def user_profiles(rng: np.random.Generator, users: int, activity: float = 1.0) -> _Users:
    """Return latent propensities, category preferences and devices for ``users`` users
    (``activity`` multiplies the odds of a visit: more events per user, same signals)."""
    n_cat = len(CATEGORIES)
    z = rng.standard_normal(users)
    shift = float(np.log(activity))
    low, high = VISIT_INTERCEPT_RANGE
    intercept = np.clip(VISIT_BASE + shift + VISIT_SPREAD * z, low + shift, high + shift)
    conversion = conversion_rate(z, rng.standard_normal(users))
    extra_views = EXTRA_VIEWS_MEAN * np.exp(EXTRA_VIEWS_SPREAD * rng.standard_normal(users))
    n_favourites = rng.choice(np.array([1, 2, 3]), size=users, p=[0.35, 0.4, 0.25])
    keys = np.log(np.array(CATEGORY_WEIGHT))[None, :] + rng.gumbel(size=(users, n_cat))
    rank = np.argsort(np.argsort(-keys, axis=1, kind="stable"), axis=1, kind="stable")
    raw = rng.gamma(2.0, size=(users, n_cat)) * (rank < n_favourites[:, None])
    weights = FAVOURITE_SHARE * raw / raw.sum(axis=1, keepdims=True) + (1 - FAVOURITE_SHARE) / n_cat
    device = rng.choice(len(DEVICES), size=users, p=DEVICE_P)
    return _Users(intercept, conversion, extra_views, weights, device)


def item_catalogue(rng: np.random.Generator, items: int, days: int, start: date) -> _Items:
    """Return the static catalogue; the first 12 items (one per category) exist all along."""
    n_cat = len(CATEGORIES)
    share = np.array(CATEGORY_WEIGHT) / sum(CATEGORY_WEIGHT)
    category = rng.choice(n_cat, size=items, p=share)
    category[:n_cat] = np.arange(n_cat)
    noun_index = rng.integers(0, 4, items)
    nouns = np.array(CATEGORY_NOUNS)[category, noun_index]
    brand = np.array(BRANDS)[rng.integers(0, len(BRANDS), items)]
    adjective = np.array(ADJECTIVES)[rng.integers(0, len(ADJECTIVES), items)]
    title = np.char.add(np.char.add(np.char.add(brand, " "), np.char.add(adjective, " ")), nouns)
    title = np.char.title(title)
    base_price = np.maximum(
        1.0, np.array(CATEGORY_BASE_PRICE)[category] * np.exp(0.45 * rng.standard_normal(items))
    )
    popularity = np.exp(rng.standard_normal(items))
    lemon = rng.random(items) < LEMON_SHARE
    quality = np.clip(
        np.where(lemon, rng.normal(2.2, 0.5, items), rng.normal(4.1, 0.5, items)), 1.0, 5.0
    )
    mid = rng.random(items) < MID_PERIOD_LAUNCH_SHARE
    mid[:n_cat] = False
    if days < 2:
        mid[:] = False
    launch_day = np.where(mid, rng.integers(1, max(days, 2), items), -rng.integers(1, 720, items))
    seconds = (start - EPOCH).days * 86400 + launch_day * 86400 + rng.integers(0, 86400, items)
    created_at = (
        pl.from_epoch(pl.Series(seconds, dtype=pl.Int64), time_unit="s")
        .dt.strftime(TIME_FORMAT)
        .to_numpy()
        .astype(str)
    )
    created_at = np.char.add(created_at, "+00:00")
    return _Items(
        category, nouns, title, brand, base_price, popularity, quality, launch_day, created_at
    )


def padded_ids(prefix: str, codes: pl.Series, width: int) -> pl.Series:
    """Return ids like ``u000123`` for integer codes, null where the code is negative."""
    frame = pl.DataFrame({"c": codes})
    return frame.select(
        pl.when(pl.col("c") >= 0).then(
            pl.concat_str([pl.lit(prefix), pl.col("c").cast(pl.String).str.zfill(width)])
        )
    ).to_series()


def labels(values: tuple[str, ...], codes: np.ndarray) -> pl.Series:
    """Return the string labels for integer codes, null where the code is negative."""
    s = pl.Series(codes, dtype=pl.Int64)
    index = pl.select(pl.when(s >= 0).then(s)).to_series()
    return pl.Series(values, dtype=pl.String).gather(index)


def iso_times(epoch_seconds: np.ndarray, plus_one: np.ndarray, suffix: str) -> pl.Series:
    """Return ISO 8601 strings with ``suffix`` (``+00:00``/``Z``), or shown at ``+01:00``."""
    frame = pl.DataFrame({"s": pl.Series(epoch_seconds, dtype=pl.Int64), "p": plus_one})
    utc = pl.from_epoch(pl.col("s"), time_unit="s")
    shifted = pl.from_epoch(pl.col("s") + 3600, time_unit="s")
    return frame.select(
        pl.when(pl.col("p"))
        .then(pl.concat_str([shifted.dt.strftime(TIME_FORMAT), pl.lit("+01:00")]))
        .otherwise(pl.concat_str([utc.dt.strftime(TIME_FORMAT), pl.lit(suffix)]))
    ).to_series()


def session_seconds(rng: np.random.Generator, n: int, weekend: bool) -> np.ndarray:
    """Return ``n`` session start seconds-of-day drawn from the weekday/weekend hour profile."""
    weights = HOUR_WEIGHTS_WEEKEND if weekend else HOUR_WEIGHTS_WEEKDAY
    hours = rng.choice(24, size=n, p=weights / weights.sum())
    return hours * 3600 + rng.integers(0, 3600, n)


def sentiment_of(rating: np.ndarray) -> np.ndarray:
    """Return the sentiment index (0 negative, 1 mixed, 2 positive) of ratings 1-5."""
    return np.where(rating >= 4, 2, np.where(rating <= 2, 0, 1))


def phrases(
    rng: np.random.Generator, banks: tuple[tuple[str, ...], ...], group: np.ndarray
) -> np.ndarray:
    """Return one random phrase per row from the bank chosen by each row's group index."""
    flat = np.array([p for bank in banks for p in bank])
    sizes = np.array([len(bank) for bank in banks])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pick = (rng.random(len(group)) * sizes[group]).astype(np.int64)
    return flat[offsets[group] + pick]


def filled_text(parts: list[np.ndarray], noun: np.ndarray, aspect: np.ndarray) -> pl.Series:
    """Return the space-joined parts with ``{p}``/``{a}`` replaced by noun and aspect."""
    frame = pl.DataFrame(
        {f"p{k}": pl.Series(part, dtype=pl.String) for k, part in enumerate(parts)}
        | {"noun": pl.Series(noun, dtype=pl.String), "aspect": pl.Series(aspect, dtype=pl.String)}
    )
    joined = pl.concat_str([pl.col(f"p{k}") for k in range(len(parts))], separator=" ")
    return frame.select(
        joined.str.replace_all("{p}", pl.col("noun"), literal=True)
        .str.replace_all("{a}", pl.col("aspect"), literal=True)
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    ).to_series()


def chosen_rows(
    rng: np.random.Generator, eligible: np.ndarray, taken: np.ndarray, n_rows: int, rate: float
) -> np.ndarray:
    """Return sorted indices of ~Binomial(n_rows, rate) eligible, untaken rows; marks them taken."""
    candidates = np.flatnonzero(eligible & ~taken)
    k = min(int(rng.binomial(n_rows, rate)) if n_rows else 0, len(candidates))
    picked = np.sort(rng.choice(candidates, size=k, replace=False)) if k else np.array([], int)
    taken[picked] = True
    return picked


# --- the generator ----------------------------------------------------------------------------


def generate_landing(
    out: Path,
    *,
    users: int = 5000,
    items: int = 500,
    days: int = 60,
    seed: int = 7,
    end_date: date,
    eval_days: int | None = None,
    activity: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> GenerateSummary:
    """Write a deterministic synthetic shop's daily landing files and truth under ``out``
    (``activity`` > 1 makes users visit more often: a bigger event history per user)."""
    if eval_days is None:  # the last 30 days, or half the period when it is shorter
        eval_days = min(30, max(1, days // 2))
    if (
        users < 1
        or days < 2
        or not 1 <= eval_days < days
        or items < len(CATEGORIES)
        or activity <= 0
    ):
        raise ValueError(
            f"need users >= 1, days >= 2, 1 <= eval_days < days, items >= {len(CATEGORIES)}, "
            f"activity > 0; got users={users}, items={items}, days={days}, "
            f"eval_days={eval_days}, activity={activity}"
        )
    out = Path(out)
    for source in (*SOURCES, "_truth"):
        (out / source).mkdir(parents=True, exist_ok=True)
    dates = period_dates(end_date, days)
    window_first = days - eval_days
    uw, iw = max(6, len(str(users - 1))), max(4, len(str(items - 1)))
    root = np.random.PCG64(seed)
    rng_static, rng_items, rng_behave, rng_detail, rng_dirt, rng_feedback, rng_ind, rng_burn = (
        np.random.Generator(root.jumped(k)) for k in range(1, 9)
    )
    rng_promo = np.random.Generator(root.jumped(9))
    rng_pii = np.random.Generator(root.jumped(10))  # its own stream: the other data stays put
    planted: list[pl.DataFrame] = []

    profile = user_profiles(rng_static, users, activity)
    catalogue = item_catalogue(rng_static, items, days, dates[0])
    n_cat, n_comp = len(CATEGORIES), len(COMPETITORS)
    listed = rng_items.random((items, n_comp)) < COMPETITOR_LISTS_P
    listed[~listed.any(axis=1), 0] = True
    market = _Market(
        category_level=np.ones(n_cat),
        our_price=np.round(catalogue.base_price * markups(rng_items, items), 2),
        active=np.ones(items, dtype=bool),
        competitor_offset=rng_items.normal(1.0, 0.05, (items, n_comp)),
        listed=listed,
        promotion_days=np.zeros(items, dtype=np.int64),
    )
    state = _UserState(
        purchase_heat=np.zeros(users),
        visit_heat=np.zeros(users),
        days_since_visit=np.minimum(rng_burn.geometric(0.1, users), 60).astype(float),
        last_item=np.full(users, -1, dtype=np.int64),
    )

    files: list[Path] = []
    rows = dict.fromkeys(SOURCES, 0)
    dirt = dict.fromkeys(DIRT_RATES, 0)
    log_no_purchase = np.zeros(users)
    base_log_odds = np.zeros(users)
    carried_late: pl.DataFrame | None = None
    returns_due: dict[int, list[dict[str, np.ndarray]]] = {}
    reviews_due: dict[int, list[dict[str, np.ndarray]]] = {}
    label_frames: list[pl.DataFrame] = []
    event_counter = order_counter = feedback_counter = 0

    for d, day in enumerate(dates):
        weekend = is_weekend(day)
        # ---- items and market -----------------------------------------------------------------
        changed = _advance_market(rng_items, market, catalogue, d)
        changed |= _advance_promotions(rng_promo, market, d)
        competitor_price = np.round(
            (catalogue.base_price * market.category_level[catalogue.category])[:, None]
            * market.competitor_offset
            * (1.0 + rng_items.normal(0.0, 0.01, (items, n_comp))),
            2,
        )
        in_stock = rng_items.random((items, n_comp)) >= OUT_OF_STOCK_P
        factor = price_factor(market.our_price, competitor_median(competitor_price, market.listed))
        factor = factor * promotion_factor(market.promotion_days > 0)
        launched = catalogue.launch_day <= d
        available = (catalogue.launch_day < d) & market.active
        mean_factor_by_category = category_mean_factor(
            catalogue.category, available, catalogue.popularity, factor
        )
        mean_factor = profile.category_weights @ mean_factor_by_category
        buy_given_visit = purchase_given_visit(profile.conversion, profile.extra_views, mean_factor)
        if d == 0:
            _burn_in(rng_burn, profile, state, buy_given_visit, day)
        # ---- users ------------------------------------------------------------------------------
        if d <= window_first:  # inside the evaluation window the state stays frozen at its start
            base_log_odds = visit_log_odds(
                profile.visit_intercept,
                state.purchase_heat,
                state.visit_heat,
                state.days_since_visit,
            )
        p_visit = sigmoid(base_log_odds + WEEKEND_BOOST * weekend)
        if d >= window_first:
            log_no_purchase += np.log1p(-p_visit * buy_given_visit)
        visited = rng_behave.random(users) < p_visit
        visitors = np.flatnonzero(visited)
        n_views, view_user, view_item, purchased = _views(
            rng_behave, profile, catalogue, visitors, available, factor
        )
        view_session = np.repeat(np.arange(len(visitors)), n_views)
        bought_today = np.bincount(view_user[purchased], minlength=users) > 0
        state.last_item[view_user[purchased]] = view_item[purchased]
        # ---- events ----------------------------------------------------------------------------
        clean, n_orders, purchases = _day_events(
            rng_detail,
            day,
            weekend,
            visitors,
            n_views,
            view_user,
            view_session,
            view_item,
            purchased,
            market.our_price,
            profile.preferred_device,
            order_counter,
            returns_due.pop(d, []),
        )
        order_counter += n_orders
        for due, rule in ((returns_due, RETURN_RULE), (reviews_due, REVIEW_RULE)):
            _schedule(rng_detail, due, purchases, catalogue, d, days, *rule)
        suffix = "Z" if rng_detail.random() < ZULU_FILE_P else "+00:00"
        plus_one = rng_detail.random(clean.height) < PLUS_ONE_ROW_P
        events, event_counter = _formatted_events(
            clean, day, suffix, plus_one, event_counter, uw, iw
        )
        events, late, event_counter = _dirty_events(
            rng_dirt, events, day, d == days - 1, event_counter, dirt
        )
        if carried_late is not None:
            events = pl.concat([events, carried_late])
        carried_late = late
        path = out / "events" / f"{day.isoformat()}.csv"
        events.select(EVENT_COLUMNS).write_csv(path, float_precision=2)
        files.append(path)
        rows["events"] += events.height
        # ---- user state update (after the day) -------------------------------------------------
        state.days_since_visit = np.where(visited, 0.0, state.days_since_visit + 1.0)
        state.purchase_heat = PURCHASE_DECAY * state.purchase_heat + bought_today
        state.visit_heat = VISIT_DECAY * state.visit_heat + visited
        # ---- items -----------------------------------------------------------------------------
        item_rows = launched & ((catalogue.launch_day == d) | changed) if d else launched
        path = out / "items" / f"{day.isoformat()}.jsonl"
        items_frame = _items_frame(catalogue, market, np.flatnonzero(item_rows), iw)
        items_frame.write_ndjson(path)
        files.append(path)
        rows["items"] += items_frame.height
        # ---- market prices ---------------------------------------------------------------------
        item_index, comp_index = np.nonzero(launched[:, None] & market.listed)
        prices = pl.DataFrame(
            {
                "date": pl.Series([day] * len(item_index), dtype=pl.Date),
                "item_id": padded_ids("i", pl.Series(item_index), iw),
                "competitor": labels(COMPETITORS, comp_index),
                "price": competitor_price[item_index, comp_index],
                "currency": pl.Series(["GBP"] * len(item_index), dtype=pl.String),
                "in_stock": in_stock[item_index, comp_index],
            }
        )
        path = out / "market_prices" / f"{day.isoformat()}.parquet"
        prices.write_parquet(path)
        files.append(path)
        rows["market_prices"] += prices.height
        # ---- market indicators -----------------------------------------------------------------
        indicators = _indicators_frame(rng_ind, market, day, weekend)
        path = out / "market_indicators" / f"{day.isoformat()}.csv.gz"
        path.write_bytes(gzip.compress(indicators.write_csv().encode(), mtime=0))
        files.append(path)
        rows["market_indicators"] += indicators.height
        # ---- feedback --------------------------------------------------------------------------
        feedback, labels_frame, feedback_counter = _feedback_frame(
            rng_feedback,
            day,
            reviews_due.pop(d, []),
            catalogue,
            state,
            users,
            feedback_counter,
            uw,
            iw,
            dirt,
        )
        feedback, pii = with_contact_details(rng_pii, feedback)
        planted.append(pii)
        path = out / "feedback" / f"{day.isoformat()}.jsonl"
        feedback.write_ndjson(path)
        files.append(path)
        rows["feedback"] += feedback.height
        label_frames.append(labels_frame)
        if progress is not None:
            progress(
                f"{day.isoformat()} ({d + 1}/{days}): {events.height} events, "
                f"{feedback.height} feedback, {items_frame.height} item rows"
            )

    truth_path = out / "_truth" / "purchase_probability.parquet"
    pl.DataFrame(
        {
            "user_id": padded_ids("u", pl.Series(np.arange(users)), uw),
            "p_purchase": np.clip(-np.expm1(log_no_purchase), *P_PURCHASE_RANGE),
        }
    ).write_parquet(truth_path)
    pl.concat(label_frames).write_parquet(out / "_truth" / "feedback_labels.parquet")
    pl.concat(planted).write_parquet(out / "_truth" / "planted_pii.parquet")
    kb = out / KNOWLEDGE_BASE_DIR
    kb.mkdir(exist_ok=True)
    faq = kb / "faq.md"
    faq.write_text(
        resources.files("nightowl.demo").joinpath("demo_faq.md").read_text(encoding="utf-8")
    )
    meta = {
        "definition": "P(user has >= 1 purchase event in [window_start, window_end]), "
        "conditional on the realised catalogue and prices",
        "period_start": dates[0].isoformat(),
        "period_end": dates[-1].isoformat(),
        "window_start": dates[window_first].isoformat(),
        "window_end": dates[-1].isoformat(),
        "eval_days": eval_days,
        "days": days,
        "seed": seed,
        "users": users,
        "items": items,
        "activity": activity,
        "overpriced_factor": OVERPRICED_FACTOR,
        "promotion_factor": PROMOTION_FACTOR,
        "dirt_rates": DIRT_RATES,
        "dirt_counts": dirt,
        "rows": rows,
    }
    (out / "_truth" / "truth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return GenerateSummary(
        out=out,
        files=tuple(files),
        rows=rows,
        dirt=dirt,
        truth_path=truth_path,
        window_start=dates[window_first],
        window_end=dates[-1],
    )


# --- day steps (mutate the simulation state; kept private) ------------------------------------


def _burn_in(
    rng: np.random.Generator, profile: _Users, state: _UserState, buy: np.ndarray, first: date
) -> None:
    """Evolve the user state over BURN_IN_DAYS unrecorded days before the first day."""
    for k in range(BURN_IN_DAYS, 0, -1):
        weekend = is_weekend(first - timedelta(days=k))
        log_odds = visit_log_odds(
            profile.visit_intercept, state.purchase_heat, state.visit_heat, state.days_since_visit
        )
        visited = rng.random(len(buy)) < sigmoid(log_odds + WEEKEND_BOOST * weekend)
        bought = visited & (rng.random(len(buy)) < buy)
        state.days_since_visit = np.where(visited, 0.0, state.days_since_visit + 1.0)
        state.purchase_heat = PURCHASE_DECAY * state.purchase_heat + bought
        state.visit_heat = VISIT_DECAY * state.visit_heat + visited


def _views(
    rng: np.random.Generator,
    profile: _Users,
    catalogue: _Items,
    visitors: np.ndarray,
    available: np.ndarray,
    factor: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return views per visitor and, per view, the user, the item and whether it was bought."""
    n_cat = len(CATEGORIES)
    n_views = 1 + rng.poisson(profile.extra_views[visitors])
    view_user = np.repeat(visitors, n_views)
    cum = np.cumsum(profile.category_weights[view_user], axis=1)
    draw = rng.random(len(view_user))
    view_category = np.minimum((cum <= draw[:, None]).sum(axis=1), n_cat - 1)
    view_item = np.zeros(len(view_user), dtype=np.int64)
    for c in range(n_cat):  # one vectorised draw per category
        in_c = np.flatnonzero(view_category == c)
        pool = np.flatnonzero(available & (catalogue.category == c))
        weights = catalogue.popularity[pool] / catalogue.popularity[pool].sum()
        view_item[in_c] = rng.choice(pool, size=len(in_c), p=weights)
    purchased = rng.random(len(view_user)) < profile.conversion[view_user] * factor[view_item]
    return n_views, view_user, view_item, purchased


def _advance_market(
    rng: np.random.Generator, market: _Market, catalogue: _Items, d: int
) -> np.ndarray:
    """Advance prices, activity and competitor offsets one day; return items whose row changed."""
    items = len(catalogue.category)
    n_cat = len(CATEGORIES)
    if d == 0:
        return np.zeros(items, dtype=bool)
    market.category_level = market.category_level * np.exp(rng.normal(0.0, 0.003, n_cat))
    reprice = rng.random(items) < PRICE_CHANGE_P
    new_price = np.round(
        catalogue.base_price * market.category_level[catalogue.category] * markups(rng, items),
        2,
    )
    old_price = market.our_price
    market.our_price = np.where(reprice, new_price, old_price)
    anchor = np.arange(items) < n_cat
    flip = rng.random(items)
    deactivate = market.active & (flip < 0.004) & ~anchor
    reactivate = ~market.active & (flip < 0.08)
    market.active = (market.active & ~deactivate) | reactivate
    redraw = rng.random(market.competitor_offset.shape) < COMPETITOR_CHANGE_P
    market.competitor_offset = np.where(
        redraw, rng.normal(1.0, 0.05, market.competitor_offset.shape), market.competitor_offset
    )
    return (market.our_price != old_price) | deactivate | reactivate


def _advance_promotions(rng: np.random.Generator, market: _Market, d: int) -> np.ndarray:
    """Count running promotions down a day and start new ones; return items whose flag flipped."""
    was_on = market.promotion_days > 0
    if d == 0:
        return np.zeros(len(was_on), dtype=bool)
    left = np.maximum(market.promotion_days - 1, 0)
    start = (left == 0) & ~was_on & (rng.random(len(left)) < PROMOTION_START_P)
    market.promotion_days = np.where(start, PROMOTION_DAYS, left)
    return was_on != (market.promotion_days > 0)


def _day_events(
    rng: np.random.Generator,
    day: date,
    weekend: bool,
    visitors: np.ndarray,
    n_views: np.ndarray,
    view_user: np.ndarray,
    view_session: np.ndarray,
    view_item: np.ndarray,
    purchased: np.ndarray,
    our_price: np.ndarray,
    preferred_device: np.ndarray,
    order_start: int,
    returns: list[dict[str, np.ndarray]],
) -> tuple[pl.DataFrame, int, dict[str, np.ndarray]]:
    """Return the day's clean typed events (sorted by time), orders used and purchase lines."""
    n_sessions, nv = len(visitors), len(view_user)
    start = session_seconds(rng, n_sessions, weekend)
    gaps = 5.0 + rng.exponential(45.0, nv)
    cumulative = np.cumsum(gaps)
    first = np.cumsum(n_views) - n_views
    t_view = start[view_session] + (cumulative - cumulative[first][view_session]).astype(np.int64)
    cart = purchased | (rng.random(nv) < CART_WITHOUT_PURCHASE_P)
    removed = cart & ~purchased & (rng.random(nv) < REMOVE_P)
    t_cart = t_view + 3 + rng.integers(0, 40, nv)
    t_remove = t_cart + 5 + rng.integers(0, 60, nv)
    last = first + n_views - 1
    t_checkout = t_view[last] + 120 + rng.integers(0, 180, n_sessions)
    quantity = 1 + rng.poisson(0.2, nv)
    channel = rng.choice(len(CHANNELS), size=n_sessions, p=CHANNEL_P)
    device = np.where(
        rng.random(n_sessions) < 0.85,
        preferred_device[visitors],
        rng.integers(0, len(DEVICES), n_sessions),
    )
    session_buys = np.bincount(view_session[purchased], minlength=n_sessions) > 0
    order_of_session = np.where(session_buys, order_start + np.cumsum(session_buys) - 1, -1)

    r_user = np.concatenate([b["user"] for b in returns]) if returns else np.array([], int)
    r_item = np.concatenate([b["item"] for b in returns]) if returns else np.array([], int)
    r_qty = np.concatenate([b["quantity"] for b in returns]) if returns else np.array([], int)
    r_price = np.concatenate([b["price"] for b in returns]) if returns else np.array([])
    r_order = np.concatenate([b["order"] for b in returns]) if returns else np.array([], int)
    t_return = rng.integers(8 * 3600, 20 * 3600, len(r_user))

    parts = [
        (VIEW, np.ones(nv, dtype=bool), t_view),
        (ADD, cart, t_cart),
        (REMOVE, removed, t_remove),
        (PURCHASE, purchased, t_checkout[view_session]),
    ]
    kind = np.concatenate(
        [np.full(int(m.sum()), k) for k, m, _ in parts] + [np.full(len(r_user), RETURN)]
    )
    seconds = np.concatenate([t[m] for _, m, t in parts] + [t_return])
    sess = np.concatenate([view_session[m] for _, m, _ in parts] + [np.full(len(r_user), -1)])
    user = np.concatenate([view_user[m] for _, m, _ in parts] + [r_user])
    item = np.concatenate([view_item[m] for _, m, _ in parts] + [r_item])
    is_buy = kind == PURCHASE
    qty = np.concatenate(
        [np.full(int(m.sum()), -1) for _, m, _ in parts[:3]] + [quantity[purchased], r_qty]
    )
    price = np.concatenate(
        [np.full(int(m.sum()), np.nan) for _, m, _ in parts[:3]]
        + [our_price[view_item[purchased]], r_price]
    )
    order = np.concatenate(
        [np.full(int(m.sum()), -1) for _, m, _ in parts[:3]]
        + [order_of_session[view_session[purchased]], r_order]
    )
    has_session = sess >= 0
    safe_sess = np.where(has_session, sess, 0)
    chan = np.where(has_session, channel[safe_sess] if n_sessions else 0, -1)
    dev = np.where(has_session, device[safe_sess] if n_sessions else 0, -1)
    seconds = np.minimum(seconds, 86399)
    order_by = np.lexsort((np.arange(len(kind)), kind, seconds))
    clean = pl.DataFrame(
        {
            "kind": kind[order_by],
            "user": user[order_by],
            "has_session": has_session[order_by],
            "item": item[order_by],
            "seconds": seconds[order_by],
            "quantity": qty[order_by],
            "price": price[order_by],
            "order": order[order_by],
            "channel": chan[order_by],
            "device": dev[order_by],
        }
    )
    purchases = {
        "user": user[is_buy],
        "item": item[is_buy],
        "quantity": qty[is_buy],
        "price": price[is_buy],
        "order": order[is_buy],
    }
    return clean, int(session_buys.sum()), purchases


def _schedule(
    rng: np.random.Generator,
    due: dict[int, list[dict[str, np.ndarray]]],
    purchases: dict[str, np.ndarray],
    catalogue: _Items,
    d: int,
    days: int,
    base_p: float,
    lemon_p: float,
    delay_days: tuple[int, int],
) -> None:
    """Schedule a random subset of today's purchase lines (returns or reviews) on later days."""
    lemon = catalogue.quality[purchases["item"]] < 3.0
    chosen = rng.random(len(lemon)) < base_p + lemon_p * lemon
    delay = rng.integers(delay_days[0], delay_days[1] + 1, len(lemon))
    target = d + delay
    keep = chosen & (target < days)
    for t in np.unique(target[keep]):
        sel = keep & (target == t)
        due.setdefault(int(t), []).append({k: v[sel] for k, v in purchases.items()})


def _formatted_events(
    clean: pl.DataFrame,
    day: date,
    suffix: str,
    plus_one: np.ndarray,
    counter: int,
    uw: int,
    iw: int,
) -> tuple[pl.DataFrame, int]:
    """Return the export-shaped events frame (strings as written) and the next event number."""
    n = clean.height
    day_seconds = (day - EPOCH).days * 86400
    seconds = clean["seconds"].to_numpy() + day_seconds
    ymd = day.strftime("%Y%m%d")
    frame = pl.DataFrame(
        {
            "event_id": padded_ids("e", pl.Series(np.arange(counter, counter + n)), 10),
            "user_id": padded_ids("u", clean["user"], uw),
            "session_id": pl.DataFrame({"u": clean["user"], "s": clean["has_session"]})
            .select(
                pl.when(pl.col("s")).then(
                    pl.concat_str([pl.lit(f"s{ymd}-"), pl.col("u").cast(pl.String).str.zfill(uw)])
                )
            )
            .to_series(),
            "event_time": iso_times(seconds, plus_one, suffix),
            "event_type": labels(EVENT_TYPES, clean["kind"].to_numpy()),
            "item_id": padded_ids("i", clean["item"], iw),
            "quantity": clean.select(
                pl.when(pl.col("quantity") >= 0).then(pl.col("quantity").cast(pl.String))
            ).to_series(),
            "price": clean["price"].fill_nan(None),
            "order_id": padded_ids("o", clean["order"], 8),
            "channel": labels(CHANNELS, clean["channel"].to_numpy()),
            "device": labels(DEVICES, clean["device"].to_numpy()),
        }
    )
    return frame, counter + n


def _dirty_events(
    rng: np.random.Generator,
    events: pl.DataFrame,
    day: date,
    last_day: bool,
    counter: int,
    dirt: dict[str, int],
) -> tuple[pl.DataFrame, pl.DataFrame | None, int]:
    """Return (today's rows with dirt planted, rows held back as late, next event number)."""
    n = events.height
    late_mask = np.zeros(n, dtype=bool)
    if not last_day:
        chosen_rows(rng, np.ones(n, dtype=bool), late_mask, n, DIRT_RATES["late_event"])
    late = events.filter(pl.Series(late_mask)) if not last_day else None
    events = events.filter(~pl.Series(late_mask))
    dirt["late_event"] += 0 if late is None else late.height
    n = events.height
    taken = np.zeros(n, dtype=bool)
    everything = np.ones(n, dtype=bool)
    is_purchase = (events["event_type"] == "purchase").to_numpy()
    is_view = (events["event_type"] == "view").to_numpy()
    bad_time = chosen_rows(rng, everything, taken, n, DIRT_RATES["bad_event_time"])
    future = chosen_rows(rng, everything, taken, n, DIRT_RATES["future_event_time"])
    bad_qty = chosen_rows(rng, is_purchase, taken, n, DIRT_RATES["bad_quantity"])
    negative = chosen_rows(rng, is_purchase, taken, n, DIRT_RATES["negative_price"])
    no_user = chosen_rows(rng, is_purchase, taken, n, DIRT_RATES["missing_user_id"])
    duplicate = chosen_rows(rng, everything, taken, n, DIRT_RATES["duplicate_event"])
    unknown = chosen_rows(rng, is_view, taken, n, DIRT_RATES["unknown_event_type"])
    for kind, idx in (
        ("bad_event_time", bad_time),
        ("future_event_time", future),
        ("bad_quantity", bad_qty),
        ("negative_price", negative),
        ("missing_user_id", no_user),
        ("duplicate_event", duplicate),
        ("unknown_event_type", unknown),
    ):
        dirt[kind] += len(idx)

    bad_values = np.full(n, None, dtype=object)
    templates = np.array(BAD_EVENT_TIMES)[rng.integers(0, len(BAD_EVENT_TIMES), len(bad_time))]
    bad_values[bad_time] = [t.replace("{y}", str(day.year)) for t in templates]
    mask_of = {}
    for name, idx in (
        ("t", bad_time),
        ("f", future),
        ("q", bad_qty),
        ("p", negative),
        ("u", no_user),
    ):
        m = np.zeros(n, dtype=bool)
        m[idx] = True
        mask_of[name] = pl.Series(m)
    time = pl.col("event_time")
    future_time = pl.concat_str(
        [
            pl.lit("2099"),
            pl.when(time.str.slice(4, 6) == "-02-29")
            .then(pl.lit("-02-28") + time.str.slice(10))
            .otherwise(time.str.slice(4)),
        ]
    )
    events = events.with_columns(
        event_time=pl.when(mask_of["t"])
        .then(pl.Series(bad_values.tolist(), dtype=pl.String))
        .when(mask_of["f"])
        .then(future_time)
        .otherwise(time),
        quantity=pl.when(mask_of["q"]).then(pl.lit("two")).otherwise(pl.col("quantity")),
        price=pl.when(mask_of["p"]).then(-pl.col("price")).otherwise(pl.col("price")),
        user_id=pl.when(mask_of["u"]).then(pl.lit(None, pl.String)).otherwise(pl.col("user_id")),
    )
    extra_unknown = events[unknown].with_columns(
        event_id=padded_ids("e", pl.Series(np.arange(counter, counter + len(unknown))), 10),
        event_type=labels(
            UNKNOWN_EVENT_TYPES, rng.integers(0, len(UNKNOWN_EVENT_TYPES), len(unknown))
        ),
    )
    counter += len(unknown)
    extra_duplicate = events[duplicate]
    position = np.concatenate(
        [
            2 * np.arange(n),
            2 * unknown + 1,
            2 * rng.integers(0, max(n, 1), len(duplicate)) + 1,
        ]
    )
    combined = pl.concat([events, extra_unknown, extra_duplicate])
    combined = combined[np.argsort(position, kind="stable")]
    return combined, late, counter


def _items_frame(catalogue: _Items, market: _Market, index: np.ndarray, iw: int) -> pl.DataFrame:
    """Return item rows (current price and active flag) for the given item indices."""
    return pl.DataFrame(
        {
            "item_id": padded_ids("i", pl.Series(index, dtype=pl.Int64), iw),
            "title": pl.Series(catalogue.title[index], dtype=pl.String),
            "category": labels(CATEGORIES, catalogue.category[index]),
            "brand": pl.Series(catalogue.brand[index], dtype=pl.String),
            "price": pl.Series(market.our_price[index], dtype=pl.Float64),
            "created_at": pl.Series(catalogue.created_at[index], dtype=pl.String),
            "active": pl.Series(market.active[index], dtype=pl.Boolean),
            "promotion": pl.Series(market.promotion_days[index] > 0, dtype=pl.Boolean),
        }
    )


def _indicators_frame(
    rng: np.random.Generator, market: _Market, day: date, weekend: bool
) -> pl.DataFrame:
    """Return the day's market indicators and advance their random walks."""
    n_cat = len(CATEGORIES)
    market.fx = float(market.fx * np.exp(rng.normal(0.0, 0.004)))
    market.cpc_noise = 0.8 * market.cpc_noise + rng.normal(0.0, 0.05)
    market.trend_noise = 0.85 * market.trend_noise + rng.normal(0.0, 0.06, n_cat)
    cpc = 0.85 * np.exp(market.cpc_noise) * (0.9 if weekend else 1.0)
    trend = 100.0 * np.exp(market.trend_noise) * (1.12 if weekend else 1.0)
    index = 100.0 * market.category_level
    return pl.DataFrame(
        {
            "date": [day.isoformat()] * (2 + 2 * n_cat),
            "indicator": ["fx_gbp_usd", "ad_cost_cpc"]
            + ["category_index"] * n_cat
            + ["search_trend"] * n_cat,
            "value": np.round(np.concatenate([[market.fx, cpc], index, trend]), 4),
            "dimension": [None, None, *CATEGORIES, *CATEGORIES],
        },
        schema={
            "date": pl.String,
            "indicator": pl.String,
            "value": pl.Float64,
            "dimension": pl.String,
        },
    )


#: Share of support tickets / other feedback that give contact details or a card number.
PII_SUPPORT_P, PII_OTHER_P = 0.08, 0.004
PII_SENTENCES = {
    "email": ("You can email me at {}.", "My email is {}", "Reply to {} please."),
    "phone": ("Call me on {}.", "My number is {}", "Phone {} any time."),
    "card": (
        "The card I used ends in... actually it is {}.",
        "Card number {} in case you need it.",
    ),
}
FIRST_NAMES = ("jane", "tom", "amira", "li", "olu", "sofia", "mark", "priya")


def with_contact_details(
    rng: np.random.Generator, feedback: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Feedback where some texts end with an e-mail address (sometimes written out to dodge
    filters), a phone number or a card number, and the list of what was planted where."""
    from stdnum import luhn

    support = (feedback["channel"] == "support").to_numpy()
    chosen = rng.random(feedback.height) < np.where(support, PII_SUPPORT_P, PII_OTHER_P)
    chosen &= (feedback["text"].fill_null("").str.len_chars() > 0).to_numpy()
    rows, kinds, values, texts = [], [], [], feedback["text"].to_list()
    for i in np.flatnonzero(chosen):
        kind = ("email", "phone", "card")[rng.choice(3, p=(0.5, 0.4, 0.1))]
        name = FIRST_NAMES[rng.integers(len(FIRST_NAMES))]
        n = int(rng.integers(10, 99))
        if kind == "email":
            value = (
                f"{name}.smith{n}@example.com"
                if rng.random() < 0.7
                else f"{name} dot smith{n} at example dot com"
            )
        elif kind == "phone":
            digits = f"{rng.integers(0, 1000):03d}"
            value = f"+44 7700 900{digits}" if rng.random() < 0.5 else f"07700 900{digits}"
        else:
            body = "4" + "".join(str(d) for d in rng.integers(0, 10, 14))
            number = body + luhn.calc_check_digit(body)
            value = " ".join(number[k : k + 4] for k in range(0, 16, 4))
        sentences = PII_SENTENCES[kind]
        texts[i] = f"{texts[i]} {sentences[rng.integers(len(sentences))].format(value)}"
        rows.append(feedback["feedback_id"][int(i)])
        kinds.append(kind)
        values.append(value)
    planted = pl.DataFrame(
        {"feedback_id": rows, "kind": kinds, "value": values},
        schema={"feedback_id": pl.String, "kind": pl.String, "value": pl.String},
    )
    return feedback.with_columns(pl.Series("text", texts, dtype=pl.String)), planted


def _feedback_frame(
    rng: np.random.Generator,
    day: date,
    reviews: list[dict[str, np.ndarray]],
    catalogue: _Items,
    state: _UserState,
    users: int,
    counter: int,
    uw: int,
    iw: int,
    dirt: dict[str, int],
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Return the day's feedback rows, their truth labels, and the next feedback number."""
    # reviews of earlier purchases
    r_user = np.concatenate([b["user"] for b in reviews]) if reviews else np.array([], int)
    r_item = np.concatenate([b["item"] for b in reviews]) if reviews else np.array([], int)
    r_rating = np.clip(
        np.rint(catalogue.quality[r_item] + rng.normal(0.0, 0.9, len(r_item))), 1, 5
    ).astype(np.int64)
    # support tickets, weighted towards recently active buyers
    n_support = int(rng.poisson(SUPPORT_PER_USER_DAY * users))
    weight = 0.2 + state.purchase_heat
    s_user = rng.choice(users, size=n_support, p=weight / weight.sum())
    s_item = state.last_item[s_user]
    s_topic = rng.choice(len(SUPPORT_TOPICS), size=n_support, p=SUPPORT_TOPIC_P)
    s_item = np.where(np.isin(s_topic, [2, 3]), -1, s_item)
    s_urgent = rng.random(n_support) < np.array(SUPPORT_URGENT_P)[s_topic]
    # surveys and app-store reviews
    n_survey = int(rng.poisson(SURVEY_PER_USER_DAY * users))
    v_user = rng.integers(0, users, n_survey)
    v_rating = 1 + rng.choice(5, size=n_survey, p=SURVEY_RATING_P)
    n_app = int(rng.poisson(APP_REVIEW_PER_USER_DAY * users))
    a_rating = 1 + rng.choice(5, size=n_app, p=APP_RATING_P)

    r_sent, v_sent, a_sent = sentiment_of(r_rating), sentiment_of(v_rating), sentiment_of(a_rating)
    r_noun = np.array(catalogue.noun[r_item], dtype=str) if len(r_item) else np.array([], str)
    r_aspect = (
        np.array(CATEGORY_ASPECTS)[catalogue.category[r_item], rng.integers(0, 3, len(r_item))]
        if len(r_item)
        else np.array([], str)
    )
    review_text = filled_text(
        [
            phrases(rng, REVIEW_OPENERS, r_sent),
            phrases(rng, REVIEW_BODIES, r_sent),
            phrases(rng, REVIEW_CLOSERS, r_sent),
        ],
        r_noun,
        r_aspect,
    )
    review_title = phrases(rng, REVIEW_TITLES, r_sent)
    s_noun = np.where(s_item >= 0, catalogue.noun[np.maximum(s_item, 0)], "item")
    urgency_pick = (
        rng.random(n_support)
        * np.where(
            s_topic == 2,
            len(URGENCY_PHRASES) + len(PAYMENT_URGENCY_PHRASES),
            len(URGENCY_PHRASES),
        )
    ).astype(np.int64)
    urgency = np.where(
        s_urgent, np.array(URGENCY_PHRASES + PAYMENT_URGENCY_PHRASES)[urgency_pick], ""
    )
    urgent_first = rng.random(n_support) < 0.5
    body = phrases(rng, SUPPORT_BODIES, s_topic)
    closer = np.array(SUPPORT_CLOSERS)[rng.integers(0, len(SUPPORT_CLOSERS), n_support)]
    support_text = filled_text(
        [
            np.where(urgent_first, urgency, ""),
            body,
            np.where(urgent_first, "", urgency),
            closer,
        ],
        s_noun,
        np.full(n_support, "", dtype=str),
    )
    support_title = phrases(rng, SUPPORT_SUBJECTS, s_topic)
    survey_text = pl.Series(phrases(rng, SURVEY_TEXTS, v_sent), dtype=pl.String)
    app_text = pl.Series(phrases(rng, APP_TEXTS, a_sent), dtype=pl.String)
    app_title = phrases(rng, REVIEW_TITLES, a_sent)

    n_rows = len(r_user) + n_support + n_survey + n_app
    channel = np.concatenate(
        [np.full(len(r_user), 0), np.full(n_support, 1), np.full(n_survey, 2), np.full(n_app, 3)]
    )
    user = np.concatenate([r_user, s_user, v_user, np.full(n_app, -1)])
    item = np.concatenate([r_item, s_item, np.full(n_survey + n_app, -1)])
    rating = np.concatenate([r_rating, np.full(n_support, -1), v_rating, a_rating])
    title = np.concatenate(
        [review_title, support_title, np.full(n_survey, "Survey response"), app_title]
    ).astype(str)
    text = pl.concat(
        [
            review_text.cast(pl.String),
            support_text.cast(pl.String),
            survey_text,
            app_text,
        ]
    )
    topic = np.concatenate([np.full(len(r_user), -1), s_topic, np.full(n_survey + n_app, -1)])
    urgent = np.concatenate(
        [np.zeros(len(r_user), bool), s_urgent, np.zeros(n_survey + n_app, bool)]
    )
    true_sentiment = np.concatenate([r_sent, np.full(n_support, -1), v_sent, a_sent])
    seconds = (day - EPOCH).days * 86400 + session_seconds(rng, n_rows, is_weekend(day))
    order_by = np.lexsort((np.arange(n_rows), seconds))
    ids = padded_ids("f", pl.Series(np.arange(counter, counter + n_rows)), 8)

    taken = np.zeros(n_rows, dtype=bool)
    rated = np.isin(channel[order_by], [0, 2])
    bad_rating = chosen_rows(rng, rated, taken, n_rows, DIRT_RATES["feedback_bad_rating"])
    empty = chosen_rows(rng, np.ones(n_rows, bool), taken, n_rows, DIRT_RATES["feedback_empty"])
    dirt["feedback_bad_rating"] += len(bad_rating)
    dirt["feedback_empty"] += len(empty)
    rating_sorted = rating[order_by]
    rating_sorted[bad_rating] = 7
    rating_sorted[empty] = -1
    empty_mask = np.zeros(n_rows, dtype=bool)
    empty_mask[empty] = True
    feedback = pl.DataFrame(
        {
            "feedback_id": ids,
            "user_id": padded_ids("u", pl.Series(user[order_by], dtype=pl.Int64), uw),
            "item_id": padded_ids("i", pl.Series(item[order_by], dtype=pl.Int64), iw),
            "rating": pl.Series(rating_sorted, dtype=pl.Int64),
            "title": pl.Series(title[order_by], dtype=pl.String),
            "text": text.gather(order_by),
            "channel": labels(FEEDBACK_CHANNELS, channel[order_by]),
            "created_at": iso_times(seconds[order_by], np.zeros(n_rows, bool), "+00:00"),
        }
    ).with_columns(
        rating=pl.when(pl.col("rating") > 0).then(pl.col("rating")),
        text=pl.when(pl.Series(empty_mask)).then(pl.lit("")).otherwise(pl.col("text")),
    )
    labels_frame = pl.DataFrame(
        {
            "feedback_id": ids,
            "channel": labels(FEEDBACK_CHANNELS, channel[order_by]),
            "topic": labels(SUPPORT_TOPICS, topic[order_by]),
            "urgent": pl.Series(urgent[order_by], dtype=pl.Boolean),
            "true_sentiment": labels(("negative", "mixed", "positive"), true_sentiment[order_by]),
        }
    )
    return feedback, labels_frame, counter + n_rows
