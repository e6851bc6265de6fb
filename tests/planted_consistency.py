"""Backends that plant the faults the consistency suite must catch.

Each is the eager backend plus a forward hook that breaks one property. The faults: a
later token leaks into an earlier position, a padded row reads its padding, a row reads
its batch mate, a KV cache loses its last entry, and a verification pass disagrees with
decoding.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, StaticCache

from harness.backends import PreparedModel, Variant
from harness.backends.eager import EagerBackend
from harness.cases import BuiltCase, Case


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class HookedBackend(EagerBackend):
    """Eager with a forward hook on one module; subclasses define the hook."""

    name = "hooked"
    family = "eager"
    module_name = "model.layers.0.mlp"

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, variant.dtype, variant.settings) for variant in super().variants(case, device)]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, Variant("eager", variant.dtype, variant.settings), device)
        target = prepared.module.get_submodule(self.module_name) if self.module_name else prepared.module
        target.register_forward_hook(self.hook)
        prepared.variant = variant
        return prepared

    def hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        raise NotImplementedError


class NextTokenLeakBackend(HookedBackend):
    """Adds the next position's output to position ``position``, so position t depends on token t + 1."""

    name = "leaky-causal"

    def __init__(self, position: int = 5, scale: float = 0.5) -> None:
        self.position = position
        self.scale = scale

    def hook(self, module, args, output):
        hidden = _hidden(output)
        if hidden.shape[1] <= self.position + 1:
            return output
        leaked = hidden.clone()
        leaked[:, self.position] += self.scale * hidden[:, self.position + 1]
        return _replace_hidden(output, leaked)


class PaddingLeakBackend(HookedBackend):
    """Adds each row's mean over all positions, padding included, so a padded row depends on its padding."""

    name = "leaky-padding"

    def hook(self, module, args, output):
        hidden = _hidden(output)
        return _replace_hidden(output, hidden + 0.5 * hidden.mean(dim=1, keepdim=True))


class BatchMateBackend(HookedBackend):
    """Adds the batch's mean to every row: a row's outputs depend on its batch mates."""

    name = "batch-mate"

    def hook(self, module, args, output):
        hidden = _hidden(output)
        return _replace_hidden(output, hidden + 0.5 * hidden.mean(dim=0, keepdim=True))


class DroppingCacheBackend(HookedBackend):
    """Drops the last entry of every KV cache the model returns."""

    name = "dropping-cache"
    module_name = ""
    cache_class: type = Cache

    def hook(self, module, args, output):
        cache = getattr(output, "cache", None)
        if isinstance(cache, self.cache_class) and cache.get_seq_length() > 1:
            cache.crop(-1)
        return output


class DroppingStaticCacheBackend(DroppingCacheBackend):
    """Drops the last entry of static caches only, so a dynamic cache stays right."""

    name = "dropping-static-cache"
    cache_class = StaticCache


class VerifyingDriftBackend(HookedBackend):
    """Pushes one token's logit up whenever several tokens are scored on top of a cache.

    Assisted generation scores the drafted tokens that way; plain decoding never does, so
    only assisted generation picks the pushed token.
    """

    name = "verifying-drift"
    module_name = ""

    def __init__(self, token: int = 9) -> None:
        self.token = token

    def hook(self, module, args, output):
        cache = getattr(output, "cache", None)
        logits = getattr(output, "logits", None)
        if logits is None or cache is None or logits.shape[1] < 2 or cache.get_seq_length() <= logits.shape[1]:
            return output
        logits[:, :, self.token] += 1000.0
        return output
