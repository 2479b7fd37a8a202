"""Failure alert bodies, and delivery that never takes the run down with it."""

from __future__ import annotations

import socket

from flows.alerts import failure_alert, send_alert


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
    assert send_alert(f"http://127.0.0.1:{port}/hook", {"text": "x"}, timeout=2) is False
    assert "could not deliver the failure alert" in caplog.text
