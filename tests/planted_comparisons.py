"""Backends that plant a speed or an accuracy fault, registered by tests as a third-party backend would be."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from harness.backends import PreparedModel, Variant
from harness.backends.eager import EagerBackend
from harness.cases import BuiltCase, Case


class _EagerTwin(EagerBackend):
    """Eager's variants under another backend name; subclasses change the prepared model."""

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, variant.dtype, variant.settings) for variant in super().variants(case, device)]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, Variant("eager", variant.dtype, variant.settings), device)
        self.plant(prepared.module, built)
        prepared.variant = variant
        return prepared

    def plant(self, module: torch.nn.Module, built: BuiltCase) -> None:
        raise NotImplementedError


class SleepyBackend(_EagerTwin):
    """Eager that sleeps before every forward: a planted slowdown."""

    name = "sleepy"
    family = "eager"
    description = "eager with a sleep before every forward"

    def __init__(self, seconds: float = 0.005) -> None:
        self.seconds = seconds

    def plant(self, module: torch.nn.Module, built: BuiltCase) -> None:
        module.register_forward_pre_hook(lambda *_: time.sleep(self.seconds))


def contains(row: Sequence[int], marker: Sequence[int]) -> bool:
    """Return whether ``marker`` occurs in ``row`` as a contiguous run."""
    width = len(marker)
    return any(list(row[start : start + width]) == list(marker) for start in range(len(row) - width + 1))


class FlippingBackend(_EagerTwin):
    """Eager that negates the logits of every row whose input contains a marker text: a planted answer flip.

    Negated logits reverse the model's preferences, so an item whose prompt carries the
    marker gets the answer the model likes least. Rows without the marker are untouched,
    so the flipped items are a fixed subset. ``tokenizer_for`` returns the tokenizer the
    evaluation uses for a built case, which turns the marker into token ids.
    """

    name = "flipping"
    family = "eager"
    description = "eager with the logits negated on inputs that contain a marker"

    def __init__(self, marker: str, tokenizer_for: Callable[[BuiltCase], Any]) -> None:
        self.marker = marker
        self.tokenizer_for = tokenizer_for

    def plant(self, module: torch.nn.Module, built: BuiltCase) -> None:
        marker_ids = self.tokenizer_for(built)(self.marker, add_special_tokens=False)["input_ids"]

        def negate_marked_rows(module, args, kwargs, output):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            rows = [index for index, row in enumerate(input_ids.tolist()) if contains(row, marker_ids)]
            if rows:
                output.logits[rows] = -output.logits[rows]
            return output

        module.register_forward_hook(negate_marked_rows, with_kwargs=True)
