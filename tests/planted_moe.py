"""Backends that plant routing faults in MoE models, for the moe_routing suite's tests.

Each behaves like the eager backend and then breaks one thing: the experts' weights, how
many experts a router returns, or one router logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.backends import PreparedModel, Variant
from harness.backends.eager import EagerBackend
from harness.cases import BuiltCase, Case
from harness.probes.routing import find_moe_layers, parse_router_output


class _PlantedEager(EagerBackend):
    """Eager with the variant renamed to this backend, so results name the planted backend."""

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, variant.dtype, variant.settings) for variant in super().variants(case, device)]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, Variant("eager", variant.dtype, variant.settings), device)
        prepared.variant = variant
        self.plant(prepared.module)
        return prepared

    def plant(self, module: torch.nn.Module) -> None:
        raise NotImplementedError


class SwappedExpertsBackend(_PlantedEager):
    """Eager with two experts' weights exchanged in one layer: the router picks an expert, another one runs."""

    name = "swapped-experts"
    family = "eager"
    description = "eager with two experts' weights swapped in one layer"

    def __init__(self, experts_name: str = "model.layers.0.mlp.experts", first: int = 1, second: int = 5) -> None:
        self.experts_name = experts_name
        self.first = first
        self.second = second

    def plant(self, module: torch.nn.Module) -> None:
        experts = module.get_submodule(self.experts_name)
        with torch.no_grad():
            for parameter in experts.parameters(recurse=False):
                if parameter.dim() == 3:
                    first = parameter[self.first].clone()
                    parameter[self.first] = parameter[self.second]
                    parameter[self.second] = first


class ShortRouterBackend(_PlantedEager):
    """Eager whose routers return one expert fewer than ``num_experts_per_tok``."""

    name = "short-router"
    family = "eager"
    description = "eager with routers that drop their last chosen expert"

    def plant(self, module: torch.nn.Module) -> None:
        for layer in find_moe_layers(module):

            def drop_last(router, args, output, num_experts=layer.num_experts):
                _, weights, index = parse_router_output(output, num_experts)
                shorter = {id(weights): weights[:, :-1], id(index): index[:, :-1]}
                return type(output)(shorter.get(id(item), item) for item in output)

            layer.router.register_forward_hook(drop_last)


@dataclass
class Perturbation:
    """One planted flip: which token of a forward, and the reference margin the perturbation overcame."""

    tokens: int
    token: int
    margin: float
    dropped: int
    picked: int


class PerturbedRouterBackend(_PlantedEager):
    """Eager whose first router receives one token nudged just past its clearest decision.

    In each forward the token with the largest gap between its k-th and (k+1)-th logit gets
    its router input moved along the minimum-norm direction that raises the (k+1)-th
    expert's logit by 1.01 times that gap and leaves every other logit unchanged. The
    router then swaps a clear winner for the runner-up. This needs a router that is a
    linear map of its input (Mixtral, Qwen3-MoE, Mellum, OLMoE, DeepSeek), not Gemma 4's.
    """

    name = "perturbed-router"
    family = "eager"
    description = "eager with one router logit raised just past a clear winner"

    def __init__(self) -> None:
        self.perturbations: list[Perturbation] = []

    def plant(self, module: torch.nn.Module) -> None:
        layer = find_moe_layers(module)[0]
        weight = next(p for p in layer.router.parameters() if p.dim() == 2 and p.shape[0] == layer.num_experts)
        top_k = module.config.num_experts_per_tok

        def nudge(router, args):
            hidden = args[0]
            flat = hidden.reshape(-1, hidden.shape[-1])
            logits = torch.nn.functional.linear(flat.float(), weight.float())
            ordered = logits.sort(-1, descending=True)
            gaps = ordered.values[:, top_k - 1] - ordered.values[:, top_k]
            token = int(gaps.argmax())
            margin = float(gaps[token])
            picked = int(ordered.indices[token, top_k])
            raise_logit = torch.zeros(layer.num_experts, dtype=torch.float64)
            raise_logit[picked] = 1.01 * margin
            direction = torch.linalg.pinv(weight.double()) @ raise_logit
            nudged = flat.clone()
            nudged[token] += direction.to(nudged.dtype)
            self.perturbations.append(
                Perturbation(flat.shape[0], token, margin, int(ordered.indices[token, top_k - 1]), picked)
            )
            return (nudged.reshape(hidden.shape), *args[1:])

        layer.router.register_forward_pre_hook(nudge)
