"""The case record: one model to test and how to build it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# "automatic" marks the cases built from Transformers' default configs (see harness.cases.automatic).
KNOWN_TAGS = frozenset({"moe", "vision", "audio", "multimodal", "encoder", "decoder", "seq2seq", "automatic"})

Source = Literal["tiny", "checkpoint"]


@dataclass(frozen=True)
class Case:
    """One model to test.

    A tiny case is a ``model_type`` plus config overrides, built with seeded random weights.
    A checkpoint case points at weights: a local folder, a file shipped inside an installed
    package (``package:<module>/<path>``), or a hub id for machines that can reach a hub.
    """

    id: str
    model_type: str
    auto_class: str
    source: Source
    tags: frozenset[str] = frozenset()
    config_overrides: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    inputs: str = "text"
    seed: int = 0
    trust_remote_code: bool = False
    description: str = ""
    # A case that is opt-in never runs unless its id is named: full production shapes, say.
    opt_in: bool = False
    # Devices the case fits on; a full-shape model may need a GPU's memory.
    devices: frozenset[str] = frozenset({"cpu", "cuda"})

    @property
    def is_moe(self) -> bool:
        return "moe" in self.tags

    @property
    def is_decoder(self) -> bool:
        return "decoder" in self.tags

    def config_hash(self) -> str:
        """Return a short digest of everything that decides the built weights."""
        payload = {
            "model_type": self.model_type,
            "auto_class": self.auto_class,
            "config_overrides": self.config_overrides,
            "checkpoint": self.checkpoint,
            "seed": self.seed,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
