"""The model registry: every trained version, its files and card, and a champion pointer.

Layout under the warehouse::

    models/<model>/<version>/model.onnx      what nightly scoring runs on a CPU (tree ensemble)
    models/<model>/<version>/model.tensor.onnx  the same model in plain tensor operators, what
                                             scoring runs on a GPU (LightGBM models since #9)
    models/<model>/<version>/model.lgb.txt   the native model it was exported from (LightGBM text;
                                             model.json for the sentiment regression)
    models/<model>/<version>/card.json       features, training window, metrics, parity, lineage
    models/<model>/champion.json             {"version": ..., "promoted_at": ..., "reason": ...}

A version folder appears in one rename and is never changed afterwards; the champion pointer is
replaced atomically. Versions are named ``<train date>-<hash of the ONNX bytes>``, so training
the same data with the same code again yields the same version instead of a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from nightowl.warehouse.manifest import InputRef
from nightowl.warehouse.store import Warehouse, write_json_atomic

ONNX_FILE = "model.onnx"
TENSOR_FILE = "model.tensor.onnx"
NATIVE_FILE = "model.lgb.txt"
CARD_FILE = "card.json"
CHAMPION_FILE = "champion.json"


class ModelCard(BaseModel):
    """What a registered model is, how it was made and how good it was when it was made."""

    model: str
    version: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    code_version: str
    features: list[dict[str, str]] = Field(description="name and dtype of each input, in order")
    training: dict[str, Any] = Field(description="snapshots, horizon, rows, positives")
    metrics: dict[str, dict[str, float | None]] = Field(
        description="model and baselines on the held-out snapshot (None: undefined)"
    )
    parity: dict[str, Any] = Field(description="ONNX vs LightGBM on held-out and edge rows")
    params: dict[str, Any]
    best_iteration: int
    inputs: list[InputRef] = Field(default_factory=list, description="clean partitions used")
    guard: dict[str, Any] | None = Field(
        default=None,
        description="the model against its best simple rule on the held-out data: metric, "
        "model, rule, rule_value, margin, beats; where it does not beat it, what the rule needs "
        "to be served in its place (None: registered before the guard existed)",
    )

    @property
    def serves_rule(self) -> str | None:
        """The simple rule served in this version's place (it did not beat it), or None."""
        return None if self.guard is None or self.guard["beats"] else str(self.guard["rule"])

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]


class Champion(BaseModel):
    """The pointer to the version nightly scoring uses, and why it got there."""

    version: str
    promoted_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )
    reason: str


class Registry:
    """Model versions and champions, stored under ``<warehouse>/models``."""

    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh
        self.root = wh.root / "models"

    def model_dir(self, model: str) -> Path:
        return self.root / model

    def version_dir(self, model: str, version: str) -> Path:
        return self.model_dir(model) / version

    @staticmethod
    def version_name(train_date: str, onnx_bytes: bytes) -> str:
        return f"{train_date}-{hashlib.sha256(onnx_bytes).hexdigest()[:10]}"

    def register(
        self,
        card: ModelCard,
        onnx_bytes: bytes,
        native_text: str,
        native_name: str = NATIVE_FILE,
        tensor_bytes: bytes | None = None,
    ) -> Path:
        """Store a version (once: an identical version already there is kept as it is)."""
        target = self.version_dir(card.model, card.version)
        if (target / CARD_FILE).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = self.wh.tmp_dir / f".model-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            (staging / ONNX_FILE).write_bytes(onnx_bytes)
            if tensor_bytes is not None:
                (staging / TENSOR_FILE).write_bytes(tensor_bytes)
            (staging / native_name).write_text(native_text)
            (staging / CARD_FILE).write_text(card.model_dump_json(indent=2))
            for path in staging.iterdir():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(staging, target)
        except OSError:
            if (target / CARD_FILE).exists():  # a concurrent run registered the same version
                return target
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def admit(
        self,
        card: ModelCard,
        onnx_bytes: bytes,
        native_text: str,
        *,
        promote: bool,
        reason: str,
        native_name: str = NATIVE_FILE,
        tensor_bytes: bytes | None = None,
    ) -> str | None:
        """Register a version, promote it when ``promote``, and return the champion's version."""
        self.register(card, onnx_bytes, native_text, native_name, tensor_bytes)
        if promote:
            self.promote(card.model, card.version, reason)
        champion = self.champion(card.model)
        return champion.version if champion else None

    def trained_before(self, model: str, as_of: date) -> ModelCard | None:
        """The champion if its data ends before ``as_of``, else the newest version whose data
        does (a past date is never served by a model that saw it); None if there is none."""
        champion = self.champion(model)
        if champion is None:
            return None
        card = self.card(model, champion.version)
        if date.fromisoformat(card.training["last_day"]) < as_of:
            return card
        earlier = [
            c for c in self.versions(model) if date.fromisoformat(c.training["last_day"]) < as_of
        ]
        return max(earlier, key=lambda c: (c.training["last_day"], c.created_at), default=None)

    def versions(self, model: str) -> list[ModelCard]:
        """Every registered version of ``model``, oldest first."""
        base = self.model_dir(model)
        if not base.exists():
            return []
        cards = [
            ModelCard.model_validate_json(p.read_text())
            for p in sorted(base.glob(f"*/{CARD_FILE}"))
        ]
        return sorted(cards, key=lambda c: (c.created_at, c.version))

    def models(self) -> list[str]:
        return (
            sorted(p.name for p in self.root.glob("*") if p.is_dir()) if self.root.exists() else []
        )

    def card(self, model: str, version: str) -> ModelCard:
        return ModelCard.model_validate_json(
            (self.version_dir(model, version) / CARD_FILE).read_text()
        )

    def onnx_bytes(self, model: str, version: str) -> bytes:
        return (self.version_dir(model, version) / ONNX_FILE).read_bytes()

    def tensor_bytes(self, model: str, version: str) -> bytes | None:
        """The version's tensorised graph; None for versions registered without one."""
        path = self.version_dir(model, version) / TENSOR_FILE
        return path.read_bytes() if path.exists() else None

    def champion(self, model: str) -> Champion | None:
        path = self.model_dir(model) / CHAMPION_FILE
        if not path.exists():
            return None
        return Champion.model_validate_json(path.read_text())

    def promote(self, model: str, version: str, reason: str) -> Champion:
        """Point the champion at ``version`` (which must be registered)."""
        if not (self.version_dir(model, version) / CARD_FILE).exists():
            raise KeyError(f"{model} {version} is not registered")
        champion = Champion(version=version, reason=reason)
        write_json_atomic(self.model_dir(model) / CHAMPION_FILE, champion.model_dump_json(indent=2))
        return champion
