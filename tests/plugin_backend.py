"""A backend as a third-party package ships it: a module of its own, found through the entry point."""

from __future__ import annotations

import torch

from harness.backends import Backend, PreparedModel, Variant
from harness.backends.base import timed
from harness.cases import BuiltCase, Case, load_model


class PluginEagerBackend(Backend):
    """Runs the model as ``from_pretrained`` returns it, in fp32 with sdpa attention."""

    name = "plugin-eager"
    family = "plugin"
    description = "an example plugin: the plain fp32 model with sdpa attention"

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, "fp32", (("attn", "sdpa"),))]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        with timed() as elapsed:
            module = load_model(built, torch.float32, device, attn_implementation=variant.setting("attn"))
        return PreparedModel(variant=variant, module=module, device=device, prepare_seconds=elapsed[0])
