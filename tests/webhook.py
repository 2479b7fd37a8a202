"""A local HTTP server standing in for a failure-alert webhook (Slack, Teams, your own)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer


@dataclass
class Webhook:
    """Where the hook listens, and the JSON bodies POSTed to it."""

    url: str
    received: list[dict] = field(default_factory=list)


@contextmanager
def webhook(status: int = 204) -> Iterator[Webhook]:
    """A webhook on a free loopback port that answers every POST with ``status``."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
