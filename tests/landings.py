"""Generated landing files, made once per test session and copied to each test that asks.

``generate_landing`` is deterministic for its arguments (the files do not depend on where they
are written), so a second test asking for the same shop gets a copy of the first one's files
instead of generating them again. Each test still gets its own writable copy, written now (the
copies' modification times are the copy's, as freshly generated files' would be).

The cache lives in a temporary folder of this process (one pytest session, or one xdist worker),
removed when the session finishes (tests/conftest.py), or else when the process exits.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from datetime import date
from pathlib import Path

from nightowl.demo.generate import generate_landing

_lock = threading.Lock()
_cache: Path | None = None


def _cache_dir() -> Path:
    """This process's cache folder, made on first use (and removed at exit, by this process
    only: a forked child inherits the exit handler)."""
    global _cache
    if _cache is None:
        _cache = Path(tempfile.mkdtemp(prefix="nightowl-landings-"))
        owner, folder = os.getpid(), _cache

        def remove() -> None:
            if os.getpid() == owner:
                shutil.rmtree(folder, ignore_errors=True)

        atexit.register(remove)
    return _cache


def clear() -> None:
    """Remove the cache (a later ``landing`` makes a new one)."""
    global _cache
    with _lock:
        if _cache is not None:
            shutil.rmtree(_cache, ignore_errors=True)
            _cache = None


def _key(kwargs: dict) -> str:
    text = repr(sorted((k, v.isoformat() if isinstance(v, date) else v) for k, v in kwargs.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def landing(out: Path, **kwargs) -> Path:
    """The landing folder ``out`` holding what ``generate_landing(out, **kwargs)`` writes:
    generated once per session for each distinct ``kwargs``, then copied. ``out``, as for
    ``generate_landing``, may exist already."""
    if "progress" in kwargs:
        raise TypeError("landing() caches the files only: call generate_landing for progress")
    with _lock:
        cached = _cache_dir() / _key(kwargs)
        if not cached.is_dir():
            partial = cached.with_name(cached.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            generate_landing(partial, **kwargs)
            partial.rename(cached)
    # copy, not copy2: the copies are new files, as generated ones would be
    shutil.copytree(cached, out, copy_function=shutil.copy, dirs_exist_ok=True)
    return Path(out)
