"""Backends that plant faults, registered by tests the way a third-party backend would be."""

from __future__ import annotations

import torch

from harness.backends import PreparedModel, Variant
from harness.backends.compiled import CompiledBackend
from harness.backends.eager import EagerBackend
from harness.backends.quantized import TRANSFORMERS_PATH, Int8WeightOnlyBackend
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


class PlainInputNoiseBackend(NoisyLayerBackend):
    """Noise on one layer for unpadded batches only, so exactly one check per variant fails."""

    name = "planted"

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, variant, device)
        state = {"padded": False}

        def remember_padding(module, args, kwargs):
            mask = kwargs.get("attention_mask")
            state["padded"] = mask is not None and not bool(mask.all())

        prepared.module.register_forward_pre_hook(remember_padding, with_kwargs=True)
        noisy_module = prepared.module.get_submodule(self.module_name)
        # The noise hook of NoisyLayerBackend runs first; undo it for padded batches.
        hooks = list(noisy_module._forward_hooks.values())
        noisy_module._forward_hooks.clear()

        def conditional_noise(module, args, output):
            return output if state["padded"] else hooks[0](module, args, output)

        noisy_module.register_forward_hook(conditional_noise)
        return prepared


class MultiplyBy(torch.nn.Module):
    """Multiplies its input by a constant: in fp16, 1e5 times a value above 0.66 overflows."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * self.factor


class MultiplyingLayerBackend(EagerBackend):
    """Eager, with a module that multiplies by 1e5 placed after one module: a planted fp16 overflow.

    The target is wrapped as ``Sequential(target, MultiplyBy(factor))``, so the planted module
    is named ``<target>.1``.
    """

    name = "multiplying-layer"
    family = "eager"
    description = "eager with a module that multiplies by 1e5 after one module"

    def __init__(self, module_name: str = "model.layers.0.input_layernorm", factor: float = 1e5) -> None:
        self.module_name = module_name
        self.factor = factor

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, variant.dtype, variant.settings) for variant in super().variants(case, device)]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, Variant("eager", variant.dtype, variant.settings), device)
        parent_name, _, child_name = self.module_name.rpartition(".")
        parent = prepared.module.get_submodule(parent_name)
        target = getattr(parent, child_name)
        setattr(parent, child_name, torch.nn.Sequential(target, MultiplyBy(self.factor)))
        prepared.variant = variant
        return prepared


def pooler_forward_scaling_in_working_dtype(self, hidden_states, pixel_position_ids, padding_positions, output_length):
    """Gemma4VisionPooler.forward as it was before Transformers v5.10.1: scales in the input dtype.

    In float16, features above 65504 / sqrt(hidden_size) overflow here.
    """
    hidden_states = hidden_states.masked_fill(padding_positions.unsqueeze(-1), 0.0)
    if hidden_states.shape[1] != output_length:
        hidden_states, padding_positions = self._avg_pool_by_positions(hidden_states, pixel_position_ids, output_length)
    return hidden_states * self.root_hidden_size, padding_positions


class ZeroingQuantizerBackend(Int8WeightOnlyBackend):
    """torchao int8 weight-only through Transformers, but the quantizer writes zeros for one weight."""

    name = "zeroing-quantizer"
    description = "int8 weight-only with one weight's int8 data zeroed"

    def __init__(self, weight_name: str = "model.layers.1.mlp.down_proj.weight") -> None:
        self.weight_name = weight_name

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, "fp32", (("path", TRANSFORMERS_PATH),))]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, variant, device)
        module_name, _, attribute = self.weight_name.rpartition(".")
        getattr(prepared.module.get_submodule(module_name), attribute).qdata.zero_()
        return prepared


class SplitWeightAtInitBackend(Int8WeightOnlyBackend):
    """torchao int8 weight-only, with one projection quantized from a freshly initialized weight.

    It mimics a loader that splits a fused gate/up projection into two weights and fills only
    the gate half from the checkpoint: the up half keeps the value Transformers' initializer
    drew, and is quantized like any other weight.
    """

    name = "split-weight-at-init"
    description = "int8 weight-only with one split projection left at its initial value"

    def __init__(self, module_name: str = "model.layers.1.mlp.up_proj") -> None:
        self.module_name = module_name

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, "fp32", (("path", TRANSFORMERS_PATH),))]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        prepared = super().prepare(built, variant, device)
        target = prepared.module.get_submodule(self.module_name)
        fresh = torch.nn.Linear(target.in_features, target.out_features, bias=False)
        # What Transformers' default _init_weights draws for a linear layer.
        torch.nn.init.normal_(fresh.weight, mean=0.0, std=built.config.initializer_range)
        quantize_(fresh, Int8WeightOnlyConfig())
        target.weight = fresh.weight
        return prepared


class PerturbedCompiledBackend(CompiledBackend):
    """The compiled backend, with a perturbation of the logits compiled into the graph."""

    name = "perturbed-compiled"
    description = "torch.compile of a forward that perturbs the logits"

    def __init__(self, scale: float = 1e-2) -> None:
        self.scale = scale

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, "fp32", (("mode", "default"),))]

    def function_to_compile(self, module: torch.nn.Module):
        from transformers.modeling_outputs import CausalLMOutput

        def perturbed_forward(**inputs):
            logits = module(**inputs).logits
            return CausalLMOutput(logits=logits + self.scale * torch.cos(1000.0 * logits))

        return perturbed_forward


class CompiledNoisyLayerBackend(CompiledBackend):
    """The compiled backend over a model whose one layer adds a perturbation: compiling is not the cause."""

    name = "compiled-noisy-layer"
    description = "torch.compile of a model with a perturbation hooked onto one layer"

    def __init__(self, module_name: str = "model.layers.1", scale: float = 1e-2) -> None:
        self.module_name = module_name
        self.scale = scale

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, "fp32", (("mode", "default"),))]

    def function_to_compile(self, module: torch.nn.Module):
        def perturb(submodule, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            perturbed = hidden + self.scale * torch.cos(1000.0 * hidden)
            return (perturbed, *output[1:]) if isinstance(output, tuple) else perturbed

        module.get_submodule(self.module_name).register_forward_hook(perturb)
        return module
