"""Backends that plant faults, registered by tests the way a third-party backend would be."""

from __future__ import annotations

import torch

from harness.backends import PreparedModel, Variant
from harness.backends.eager import EagerBackend
from harness.cases import BuiltCase, Case


class NoisyLayerBackend(EagerBackend):
    """Eager, plus Gaussian noise added to one module's output: a planted numeric fault."""

    name = "noisy-layer"
    family = "eager"
    description = "eager with noise added to one layer's output"

    def __init__(self, module_name: str = "model.layers.1", scale: float = 1e-2) -> None:
        self.module_name = module_name
        self.scale = scale

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, variant.dtype, variant.settings) for variant in super().variants(case, device)]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        eager = Variant("eager", variant.dtype, variant.settings)
        prepared = super().prepare(built, eager, device)
        generator = torch.Generator().manual_seed(0)

        def add_noise(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            noise = torch.randn(hidden.shape, generator=generator).to(hidden.dtype) * self.scale
            noisy = hidden + noise
            return (noisy, *output[1:]) if isinstance(output, tuple) else noisy

        prepared.module.get_submodule(self.module_name).register_forward_hook(add_noise)
        prepared.variant = variant
        return prepared
