"""Alerts: a small JSON body POSTed to a webhook (Slack, Teams, PagerDuty, your own) when a
nightly run fails, or when the model-health step raises an alert."""

import logging

import httpx
from pydantic import SecretStr

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


def health_alert(*, run_date: str, alerts: list[str], report_page: str | None) -> dict:
    """The model-health body: tonight's alerts (models losing to their simple rules on matured
    outcomes, drifted inputs), one line each, and the page that charts them."""
    return {
        "text": f"nightowl: model health for {run_date}: {len(alerts)} alert(s)\n"
        + "\n".join(f"- {line}" for line in alerts),
        "kind": "model_health",
        "date": run_date,
        "alerts": alerts,
        "report_page": report_page,
    }


def send_alert(url: SecretStr, payload: dict, timeout: float) -> bool:
    """POST the alert; a webhook that cannot be reached is logged (by its host, the rest of its
    address is a secret), never raised."""
    try:
        httpx.post(url.get_secret_value(), json=payload, timeout=timeout).raise_for_status()
    except httpx.HTTPStatusError as exc:
        log.warning("the alert to %s was refused: HTTP %d", _host(url), exc.response.status_code)
        return False
    except httpx.HTTPError as exc:  # its message may quote the address
        said = str(exc).replace(url.get_secret_value(), _host(url)) or type(exc).__name__
        log.warning("could not deliver the alert to %s: %s", _host(url), said)
        return False
    return True


def _host(url: SecretStr) -> str:
    """What of a webhook address can be shown: scheme and host (``https://hooks.slack.com/…``)."""
    parts = httpx.URL(url.get_secret_value())
    return f"{parts.scheme}://{parts.host}{f':{parts.port}' if parts.port else ''}/…"
