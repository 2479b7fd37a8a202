"""nightowl's errors: every one it raises on purpose is a ``NightowlError``.

A caller (the command line, a notebook, an orchestrator) can tell "nightowl refused this, and
said why" from a bug by catching this one class; each subclass keeps the built-in base it always
had (``ValueError``, ``RuntimeError``), so existing ``except`` clauses still match.
"""

from __future__ import annotations


class NightowlError(Exception):
    """Something nightowl refused or could not do, with a message that says what and where."""


class NotEnoughHistory(NightowlError, ValueError):
    """The warehouse does not yet hold the days a time-split training needs."""
