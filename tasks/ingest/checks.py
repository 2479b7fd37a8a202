"""Data checks of a nightly run: is what arrived complete and plausible enough to publish on?

Each check compares one observed number with its threshold and says so in a sentence that names
the check, the table and the numbers. A failing check blocks the run unless it is configured as a
warning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from itertools import pairwise
from statistics import median


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one table for one run date."""

    check: str
    table: str
    status: str  # "pass", "fail", "warn" or "skip"
    observed: float | None
    threshold: float | None
    message: str

    def as_row(self) -> dict:
        return asdict(self)


def _verdict(failed: bool, blocking: bool) -> str:
    return "pass" if not failed else ("fail" if blocking else "warn")


def freshness(
    table: str, run_date: str, file_dates: list[str | None], blocking: bool, cadence_days: int = 1
) -> CheckResult:
    """Fails when no landing file arrived for the run date, or for a source delivered every
    ``cadence_days`` days, for any of the last ``cadence_days`` days up to it (a file named
    without a date counts)."""
    last = date.fromisoformat(run_date)
    window = {(last - timedelta(days=k)).isoformat() for k in range(cadence_days)}
    fresh = sum(1 for d in file_dates if d is None or d in window)
    failed = fresh == 0
    span = run_date if cadence_days == 1 else f"the {cadence_days} days to {run_date}"
    message = (
        f"{table}: no landing file for {span} arrived (freshness)"
        if failed
        else f"{table}: {fresh} landing file(s) for {span}"
    )
    return CheckResult("freshness", table, _verdict(failed, blocking), fresh, 1, message)


def delivery_cadence(file_dates: list[date], recent: int = 8) -> int:
    """Days between a source's deliveries, read off the dates of its ``recent`` newest files:
    the median gap (1 with fewer than three dated files, or a daily source)."""
    days = sorted(set(file_dates))[-recent:]
    if len(days) < 3:
        return 1
    gaps = sorted((b - a).days for a, b in pairwise(days))
    return max(1, gaps[len(gaps) // 2])


def quarantine_share(
    table: str,
    rows_read: int,
    rows_quarantined: int,
    limit: float,
    blocking: bool,
    min_rows: int = 1,
) -> CheckResult:
    """Fails when more than ``limit`` of the rows read this run were quarantined."""
    if rows_read < max(min_rows, 1):
        message = f"{table}: {rows_read:,} rows read, too few to judge"
        return CheckResult("quarantine_share", table, "skip", None, limit, message)
    what = f"{table}: {rows_quarantined:,} of {rows_read:,} rows quarantined"
    return _share("quarantine_share", table, what, rows_quarantined, rows_read, limit, blocking)


def row_count(
    table: str,
    rows: int,
    history: list[int],
    tolerance: float,
    blocking: bool,
    min_rows: int = 0,
    cadence_days: int = 1,
) -> CheckResult:
    """Fails when the day's rows are further than ``tolerance`` from the trailing median. A source
    delivered every ``cadence_days`` days has no rows between deliveries: such a day is skipped
    (freshness says whether a delivery is late)."""
    if rows == 0 and cadence_days > 1:
        message = f"{table}: no rows this day; the source delivers every {cadence_days} days"
        return CheckResult("row_count", table, "skip", rows, None, message)
    if len(history) < 3:
        message = f"{table}: {len(history)} earlier partition(s), too few to compare"
        return CheckResult("row_count", table, "skip", rows, None, message)
    typical = median(history)
    if typical < min_rows:
        message = f"{table}: a trailing median of {typical:,.0f} rows is too small to judge"
        return CheckResult("row_count", table, "skip", rows, typical, message)
    deviation = abs(rows - typical) / typical if typical else float(rows > 0)
    failed = deviation > tolerance
    message = (
        f"{table}: {rows:,} rows vs a trailing median of {typical:,.0f} "
        f"({deviation:.0%} off, tolerance {tolerance:.0%})"
    )
    return CheckResult("row_count", table, _verdict(failed, blocking), rows, typical, message)


def null_share(
    table: str, column: str, nulls: int, rows: int, limit: float, blocking: bool
) -> CheckResult:
    """Fails when more than ``limit`` of a required column's values are missing."""
    name = f"null_share:{column}"
    if rows == 0:
        return CheckResult(name, table, "skip", None, limit, f"{table}: no rows for {column}")
    what = f"{table}.{column}: {nulls:,} of {rows:,} values missing"
    return _share(name, table, what, nulls, rows, limit, blocking)


def _share(
    name: str, table: str, what: str, part: int, whole: int, limit: float, blocking: bool
) -> CheckResult:
    share = part / whole
    failed = share > limit
    message = f"{what} ({share:.1%}), {'over' if failed else 'within'} the limit of {limit:.1%}"
    return CheckResult(name, table, _verdict(failed, blocking), share, limit, message)
