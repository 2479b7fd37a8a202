"""Alert bodies (a failed run, model health), and delivery that never takes the run down."""

from __future__ import annotations

import socket

from pydantic import SecretStr

from nightowl.flows.alerts import failure_alert, send_alert
from tests.webhook import webhook


def test_the_alert_names_flow_date_steps_message_and_link():
    alert = failure_alert(
        flow="nightowl-nightly", run_date="2026-11-27", failed_steps=["ingest-events"],
        message="events.csv: required column 'event_time' is missing",
        ui_link="http://127.0.0.1:4200/runs/flow-run/abc",
    )  # fmt: skip
    assert alert["failed_task"] == "ingest-events"
    assert alert["text"] == "nightowl: nightowl-nightly for 2026-11-27 failed in ingest-events"
    assert alert["ui_link"].endswith("/runs/flow-run/abc")


def test_an_unreachable_webhook_is_logged_not_raised(caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = SecretStr(f"http://127.0.0.1:{port}/hook/T0/s3cr3t")
    assert send_alert(url, {"text": "x"}, timeout=2) is False
    assert f"could not deliver the alert to http://127.0.0.1:{port}/…" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_a_refusing_webhook_is_logged_by_its_status_without_its_address(caplog):
    with webhook(status=403) as hook:
        url = SecretStr(f"{hook.url}/services/T0/s3cr3t")
        assert send_alert(url, {"text": "x"}, timeout=5) is False
    assert "was refused: HTTP 403" in caplog.text
    assert "s3cr3t" not in caplog.text and "services" not in caplog.text


def test_model_health_alerts_reach_the_webhook_in_one_message(tmp_path):
    from datetime import date

    from nightowl.flows.nightly import alert_on_health
    from nightowl.flows.settings import load_settings

    alerts = [
        "propensity (all_users): what was served lost to the simple rule rfm on roc_auc for "
        "3 served nights in a row (2026-10-01, 2026-10-02, 2026-10-03; mean 0.6 vs 0.7)",
        "propensity: 1 column(s) drifted from the champion's training data (…)",
    ]
    summary = {"health": {"model-health": {"alerts": alerts}}}
    quiet = {"health": {"model-health": {"alerts": []}}}
    with webhook() as hook:
        settings = load_settings(None, data_root=str(tmp_path))
        assert alert_on_health(settings, date(2026, 11, 2), summary, "/r/index.html") is False
        settings.alerts.webhook_url = SecretStr(f"{hook.url}/hook")
        assert alert_on_health(settings, date(2026, 11, 2), quiet, None) is False
        assert alert_on_health(settings, date(2026, 11, 2), summary, "/r/index.html") is True
    (body,) = hook.received
    assert body["kind"] == "model_health" and body["alerts"] == alerts
    assert body["text"].startswith("nightowl: model health for 2026-11-02: 2 alert(s)\n- ")
    assert body["report_page"] == "/r/index.html"
