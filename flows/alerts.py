"""Failure alerts: a small JSON body POSTed to a webhook (Slack, Teams, PagerDuty, your own)."""

import logging

import httpx

log = logging.getLogger("nightowl")


def failure_alert(
    *, flow: str, run_date: str, failed_steps: list[str], message: str, ui_link: str | None
) -> dict:
    """The alert body: which flow and date failed, in which steps, why, and where to look."""
    steps = ", ".join(failed_steps) or "the flow"
    return {
        "text": f"nightowl: {flow} for {run_date} failed in {steps}",
        "flow": flow,
        "date": run_date,
        "failed_task": failed_steps[0] if failed_steps else None,
        "failed_tasks": failed_steps,
        "message": message,
        "ui_link": ui_link,
    }


def send_alert(url: str, payload: dict, timeout: float) -> bool:
    """POST the alert; a webhook that cannot be reached is logged, never raised."""
    try:
        httpx.post(url, json=payload, timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("could not deliver the failure alert to %s: %s", url, exc)
        return False
    return True
