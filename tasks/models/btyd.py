"""Buy-till-you-die: the BG/NBD model of repeat purchases (Fader, Hardie & Lee, 2005).

Each customer buys at a Poisson rate (gamma-distributed over customers: ``r``, ``alpha``) until
they drop out, which may happen after any purchase with a probability that is beta-distributed
over customers (``a``, ``b``). From a customer's repeat purchases ``x``, the age of their last
purchase within their history ``t_x`` and the length of that history ``T`` (time since the first
purchase), the model gives the expected purchases in the next ``t`` days and the probability
that the customer is still alive.

Written here rather than taken from a library: ``lifetimes`` and ``btyd`` are unmaintained (last
releases 2020 and 2022, pinned to old pandas), and ``pymc-marketing`` brings PyMC and PyTensor
for a four-parameter maximum-likelihood fit that SciPy does in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import optimize, special

#: Time unit of the fit: weeks keep the rate parameters near 1, where the optimiser is at ease.
DAYS_PER_UNIT = 7.0


@dataclass(frozen=True)
class BgNbd:
    """Fitted BG/NBD parameters: purchase rate gamma(r, alpha), dropout beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def expected_purchases(
        self, days: float, x: np.ndarray, t_x: np.ndarray, age: np.ndarray
    ) -> np.ndarray:
        """Expected purchases in the next ``days`` of customers with ``x`` repeat purchases, the
        last ``t_x`` days after their first, ``age`` days after their first purchase."""
        x, t_x, age = _units(x, t_x, age)
        t = days / DAYS_PER_UNIT
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        with np.errstate(all="ignore"):
            hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + age + t))
            grown = 1 - ((alpha + age) / (alpha + age + t)) ** (r + x) * hyp
            exact = (a + b + x - 1) / (a - 1) * grown / self._alive_odds(x, t_x, age)
        # The hypergeometric series overflows for frequent buyers; there the customer's rate
        # while alive, times the time, is what the exact figure tends to.
        approximate = (
            self.p_alive(x, t_x * DAYS_PER_UNIT, age * DAYS_PER_UNIT) * (r + x) / (alpha + age) * t
        )
        return np.clip(np.where(np.isfinite(exact), exact, approximate), 0.0, None)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
        """The probability that each customer has not dropped out by now."""
        return 1.0 / self._alive_odds(*_units(x, t_x, age))

    def _alive_odds(self, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
        dropped = (
            self.a
            / np.maximum(self.b + x - 1, 1e-12)
            * ((self.alpha + age) / (self.alpha + t_x)) ** (self.r + x)
        )
        return 1.0 + np.where(x > 0, dropped, 0.0)


def _units(*days: np.ndarray) -> tuple[np.ndarray, ...]:
    x, t_x, age = (np.asarray(d, dtype=np.float64) for d in days)
    return x, t_x / DAYS_PER_UNIT, age / DAYS_PER_UNIT


def log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, age: np.ndarray
) -> np.ndarray:
    """Each customer's log-likelihood under (r, alpha, a, b); times in the fit's unit."""
    r, alpha, a, b = params
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    beta = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    still = -(r + x) * np.log(alpha + age)
    # Dropped out right after the last purchase: only possible after a repeat purchase.
    gone = np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x)
    return head + beta + np.where(x > 0, np.logaddexp(still, gone), still)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, age: np.ndarray, penalty: float = 1e-3) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters for customers' (x, t_x, age), times in days.

    A small L2 penalty on the log-parameters keeps the fit finite on data that pins one down
    poorly (few repeat buyers); ``a`` is kept above 1, where expected purchases are defined."""
    x, t_x, age = _units(x, t_x, age)
    if len(x) == 0:
        raise ValueError("BG/NBD needs at least one customer")

    def loss(log_params: np.ndarray) -> float:
        params = np.exp(log_params)
        params[2] += 1.0  # a > 1
        mean = log_likelihood(params, x, t_x, age).mean()
        return float(-mean + penalty * np.sum(log_params**2))

    # L-BFGS-B with numerical gradients: on 15,000 customers it reaches a better optimum than
    # Nelder-Mead in a quarter of the time (0.24 s against 0.95 s).
    found = optimize.minimize(loss, np.zeros(4), method="L-BFGS-B")
    r, alpha, a_less_one, b = np.exp(found.x)
    return BgNbd(r=float(r), alpha=float(alpha), a=float(a_less_one + 1.0), b=float(b))


def btyd_inputs(
    purchase_days: pl.Expr, recency_days: pl.Expr, first_purchase_days: pl.Expr
) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """BG/NBD's (x, t_x, age) from a customer's distinct purchase days, days since the last and
    days since the first purchase (as of the same date)."""
    x = (purchase_days - 1).clip(lower_bound=0).cast(pl.Float64)
    age = first_purchase_days.cast(pl.Float64)
    t_x = (first_purchase_days - recency_days).cast(pl.Float64)
    return x, t_x, age
