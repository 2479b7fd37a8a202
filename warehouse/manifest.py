"""Partition manifests: what a published partition holds and what it was made from (lineage)."""

from __future__ import annotations

import hashlib
import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

MANIFEST = "_manifest.json"


class FileEntry(BaseModel):
    """One Parquet file of a partition, or one landing file a partition was read from."""

    name: str
    rows: int
    bytes: int
    sha256: str


class InputRef(BaseModel):
    """A pointer to what an output was computed from: a partition or a landing file."""

    kind: str  # "partition" or "landing"
    name: str  # "<layer>/<table>/<key>=<value>" or the landing file path
    content_hash: str


class Manifest(BaseModel):
    """The published state of one partition: rows, files, content hash, schema and lineage."""

    layer: str
    table: str
    partition: dict[str, str]
    rows: int
    bytes: int
    files: list[FileEntry]
    content_hash: str
    columns: dict[str, str] = Field(description="column name → Polars dtype")
    code_version: str
    inputs: list[InputRef] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def ref(self) -> InputRef:
        key = "/".join(f"{k}={v}" for k, v in self.partition.items())
        return InputRef(
            kind="partition",
            name=f"{self.layer}/{self.table}/{key}",
            content_hash=self.content_hash,
        )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so big files need no memory."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def combined_hash(parts: list[str]) -> str:
    """One hash standing for an ordered list of hashes (or any strings)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _package_dir(name: str) -> Path:
    """Where a package's files are, in a wheel or an editable install alike."""
    module = importlib.import_module(name)
    if module.__file__ is None:  # a namespace package: no __init__.py to say where it is
        raise RuntimeError(f"{name} has no __init__.py: cannot tell where its files are")
    return Path(module.__file__).resolve().parent


def code_version() -> str:
    """Package version plus a hash of the code that shapes data (for manifests and cache keys)."""
    from importlib.metadata import PackageNotFoundError, version

    # Templates and bundled files shape outputs too (the report page, the demo's FAQ).
    sources = sorted(
        p
        for package in ("schemas", "tasks", "warehouse", "demo")
        for pattern in ("*.py", "*.j2", "*.md")
        for p in _package_dir(f"nightowl.{package}").rglob(pattern)
    )
    digest = combined_hash([hashlib.sha256(p.read_bytes()).hexdigest() for p in sources])
    try:
        release = version("nightowl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        release = "0+unknown"
    return f"{release}+{digest[:12]}"
