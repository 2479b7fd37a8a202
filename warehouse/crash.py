"""Crash points: named places in the write path where a fault-injection test may kill the process.

``NIGHTOWL_CRASH_AT=<point>[:<where>][@<n>]`` sends this process SIGKILL the ``n``-th time (default:
the first) it passes ``<point>`` at a place whose description contains ``<where>``, e.g.
``publish-staged:clean/events@2`` or ``json-half:_manifest.json``; several specs joined by ``|``
kill at whichever comes first, and the one that did is written to stderr first
(``crash point <spec>``). SIGKILL cannot be caught, so nothing gets a chance to tidy up: what is
on disk then is what a power cut or the OOM killer would leave, short of unflushed pages. Unset, a
crash point costs one environment lookup.

The points, in the order a write passes them:

- ``ingest-part``        a raw part of a landing file is written to staging (one per batch)
- ``file-added``         a finished file was moved into an accumulating partition (raw, quarantine)
- ``partition-staged``   a partition's Parquet file is written to staging, its manifest not yet
- ``json-half``          half of a JSON file (manifest, ledger entry, run record) is written
- ``json-staged``        a JSON file is written in full beside its final name, not yet renamed
- ``publish-staged``     a staged partition or report page is complete, not yet swapped in
- ``publish-swapped``    it was swapped in; the old one is not yet deleted
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV = "NIGHTOWL_CRASH_AT"
POINTS = (
    "ingest-part",
    "file-added",
    "partition-staged",
    "json-half",
    "json-staged",
    "publish-staged",
    "publish-swapped",
)

_lock = threading.Lock()
_passed: Counter[str] = Counter()


def crash_point(point: str, where: str = "") -> None:
    """Kill this process here if ``NIGHTOWL_CRASH_AT`` names this point (see the module doc)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for wanted in spec.split("|"):
        target, _, nth = wanted.partition("@")
        name, _, place = target.partition(":")
        if name != point or place not in where:
            continue
        with _lock:  # steps run in threads: count each passage once
            _passed[wanted] += 1
            if _passed[wanted] == int(nth or 1):
                os.write(2, f"crash point {wanted}\n".encode())
                os.kill(os.getpid(), signal.SIGKILL)
