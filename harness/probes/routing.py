"""Find the Mixture-of-Experts layers of a model and capture what their routers decide.

MoE layers are found by structure, not by class name, so a new MoE architecture is covered
without code here. In Transformers 5 the experts of a layer are one module holding fused
3-D parameters whose first dimension is the expert count (``gate_up_proj`` and
``down_proj``), called as ``experts(hidden_states, top_k_index, top_k_weights)``. The
router is a sibling module with a ``(num_experts, hidden)`` projection. Routers
return ``(scores, top_k_weights, top_k_index)``, where scores are the pre-softmax logits
for most models and the softmax probabilities for Gemma 4 (``Gemma4TextRouter``, whose
pre-softmax scores are the output of its ``proj`` child).

A capture hooks each router (its scores), the experts module (the routing it receives)
and the shared experts beside it, runs one forward, and copies everything to the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

ScoresKind = Literal["logits", "probabilities"]

# Child names that mark a router among an experts module's siblings when several hold a
# (num_experts, hidden) parameter.
_ROUTER_NAME_HINTS = ("router", "gate")


class MoEDiscoveryError(RuntimeError):
    """A model whose MoE layers cannot be found or read; the message names what was found."""


@dataclass(frozen=True)
class MoELayer:
    """One MoE layer: its router, its fused experts and its shared experts, by qualified name."""

    router_name: str
    router: nn.Module
    experts_name: str
    experts: nn.Module
    num_experts: int
    shared: tuple[tuple[str, nn.Module], ...] = ()
    # A linear child of the router whose output is its pre-softmax scores; used when the
    # router itself returns probabilities.
    logits_projection: nn.Module | None = None

    @property
    def block_name(self) -> str:
        return self.experts_name.rpartition(".")[0]


@dataclass
class SharedExpertsCall:
    """One shared-experts module's call in one forward: the tokens it received and how many it changed."""

    name: str
    tokens: int
    active_tokens: int


@dataclass
class LayerRouting:
    """One MoE layer's routing in one forward, on the CPU.

    Tokens are flattened batch-major, as MoE blocks flatten them: token ``t`` is batch row
    ``t // seq_len``, position ``t % seq_len``. ``logits`` are the pre-softmax scores in
    float32. ``index`` and ``weights`` are the router's decision, or what the experts
    received for routers that return only scores. ``received_index`` and ``received_weights``
    are the experts module's arguments. They differ from the decision only when a capture
    forces the routing.
    """

    router_name: str
    experts_name: str
    num_experts: int
    logits: torch.Tensor
    scores_kind: ScoresKind
    logits_source: str
    index: torch.Tensor
    weights: torch.Tensor
    received_index: torch.Tensor
    received_weights: torch.Tensor
    experts_input: torch.Tensor
    router_scores: torch.Tensor
    router_returns_routing: bool = True
    shared: list[SharedExpertsCall] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return int(self.index.shape[0])

    def select(self, tokens: torch.Tensor) -> LayerRouting:
        """Return this record restricted to the flattened token indices ``tokens``, in that order."""
        return replace(
            self,
            logits=self.logits[tokens],
            index=self.index[tokens],
            weights=self.weights[tokens],
            received_index=self.received_index[tokens],
            received_weights=self.received_weights[tokens],
            experts_input=self.experts_input[tokens],
            router_scores=self.router_scores[tokens],
            shared=[],
        )


@dataclass
class RoutingCapture:
    """Every MoE layer's routing in one forward, in forward order, and the model's output."""

    layers: list[LayerRouting]
    outputs: Any = None

    def layer(self, router_name: str) -> LayerRouting:
        for layer in self.layers:
            if layer.router_name == router_name:
                return layer
        known = ", ".join(layer.router_name for layer in self.layers)
        raise KeyError(f"no routing captured for {router_name!r}; captured: {known}")

    def select(self, tokens: torch.Tensor) -> RoutingCapture:
        """Return the capture restricted to the flattened token indices ``tokens`` in every layer."""
        return RoutingCapture([layer.select(tokens) for layer in self.layers])


def fused_expert_count(module: nn.Module) -> int | None:
    """Return the expert count of a fused experts module, or None when ``module`` is not one.

    A fused experts module has at least two 3-D parameters of its own that share their first
    dimension (convolutions, whose weights are 3-D too, are not experts).
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        return None
    leading = {parameter.shape[0] for parameter in module.parameters(recurse=False) if parameter.dim() == 3}
    count = sum(1 for parameter in module.parameters(recurse=False) if parameter.dim() == 3)
    if count < 2 or len(leading) != 1:
        return None
    experts = leading.pop()
    return experts if experts >= 2 else None


def _expert_widths(experts: nn.Module) -> set[int]:
    return {
        size for parameter in experts.parameters(recurse=False) if parameter.dim() == 3 for size in parameter.shape[1:]
    }


def _routes_to(module: nn.Module, num_experts: int, widths: set[int]) -> bool:
    """Return whether ``module`` has a (num_experts, width) parameter, width one of the experts' sizes."""
    return any(
        parameter.dim() == 2 and parameter.shape[0] == num_experts and parameter.shape[1] in widths
        for parameter in module.parameters()
    )


def _find_router(parent: nn.Module, experts_name: str, experts: nn.Module, num_experts: int) -> tuple[str, nn.Module]:
    widths = _expert_widths(experts)
    candidates = [
        (name, child)
        for name, child in parent.named_children()
        if child is not experts and fused_expert_count(child) is None and _routes_to(child, num_experts, widths)
    ]
    if len(candidates) > 1:
        hinted = [
            (name, child) for name, child in candidates if any(hint in name.lower() for hint in _ROUTER_NAME_HINTS)
        ]
        candidates = hinted or candidates
    if len(candidates) != 1:
        found = ", ".join(f"{name} [{type(child).__name__}]" for name, child in candidates) or "none"
        raise MoEDiscoveryError(
            f"{experts_name} [{type(experts).__name__}] has {num_experts} fused experts, but its siblings have "
            f"{len(candidates)} router candidates (a ({num_experts}, hidden) projection): {found}"
        )
    return candidates[0]


def _shared_experts(parent: nn.Module, parent_name: str) -> tuple[tuple[str, nn.Module], ...]:
    """Return the parent's shared-experts children (``shared_expert``, ``shared_experts``), not their gates."""
    found = []
    for name, child in parent.named_children():
        if "shared_expert" in name and not name.endswith("_gate"):
            found.append((_join(parent_name, name), child))
    return tuple(found)


def _logits_projection(router: nn.Module, num_experts: int) -> nn.Module | None:
    for child in router.modules():
        if isinstance(child, nn.Linear) and child.out_features == num_experts:
            return child
    return None


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def find_moe_layers(model: nn.Module) -> list[MoELayer]:
    """Return the model's MoE layers in registration order, which is the forward order of decoders."""
    layers = []
    for name, module in model.named_modules():
        num_experts = fused_expert_count(module)
        if num_experts is None:
            continue
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        router_child, router = _find_router(parent, name, module, num_experts)
        layers.append(
            MoELayer(
                router_name=_join(parent_name, router_child),
                router=router,
                experts_name=name,
                experts=module,
                num_experts=num_experts,
                shared=_shared_experts(parent, parent_name),
                logits_projection=_logits_projection(router, num_experts),
            )
        )
    return layers


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [item for item in value if isinstance(item, torch.Tensor)]
    return []


def parse_router_output(output: Any, num_experts: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Split a router's output into (scores, top-k weights, top-k index); the last two may be None.

    Roles are distinguished by dtype and shape rather than by position: the integer tensor is the
    index, the float tensor shaped like it the weights, the one over ``num_experts`` the scores.
    """
    tensors = _tensors(output)
    index = next((tensor for tensor in tensors if not tensor.is_floating_point()), None)
    floats = [tensor for tensor in tensors if tensor.is_floating_point()]
    weights = None
    if index is not None:
        weights = next((tensor for tensor in floats if tensor.shape == index.shape), None)
    scores = next((tensor for tensor in floats if tensor.shape[-1] == num_experts and tensor is not weights), None)
    if scores is None:
        shapes = [tuple(tensor.shape) for tensor in tensors]
        raise MoEDiscoveryError(f"router output has no tensor over {num_experts} experts; tensor shapes: {shapes}")
    return scores, weights, index


def parse_experts_arguments(args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (hidden_states, top_k_index, top_k_weights) from an experts module's call arguments."""
    values = [*args, *kwargs.values()]
    tensors = [value for value in values if isinstance(value, torch.Tensor)]
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    index = next((tensor for tensor in tensors if not tensor.is_floating_point()), None)
    if hidden is None or index is None:
        raise MoEDiscoveryError("experts module was called without hidden states and a top-k index tensor")
    weights = next(
        (
            tensor
            for tensor in tensors
            if tensor.is_floating_point() and tensor is not hidden and tensor.shape == index.shape
        ),
        None,
    )
    if weights is None:
        raise MoEDiscoveryError(
            f"experts module was called without top-k weights shaped like its index {tuple(index.shape)}"
        )
    return hidden, index, weights


def looks_like_probabilities(scores: torch.Tensor) -> bool:
    """Return whether every row is non-negative and sums to 1: post-softmax scores, not logits."""
    values = scores.detach().float()
    if values.numel() == 0 or bool((values < 0).any()):
        return False
    return bool(((values.sum(-1) - 1).abs() < 1e-3).all())


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").clone()


@contextmanager
def recording_routing(layers: list[MoELayer], forced: RoutingCapture | None = None) -> Iterator[list[LayerRouting]]:
    """Record the routing of ``layers`` in every forward run inside the block.

    Each router call adds one :class:`LayerRouting` in call order. With ``forced``, each
    router's decision is recorded and then replaced by the forced capture's decision for
    the same layer and call, so every layer receives hidden states computed with the forced
    routing: a layer's flips are then its own, never the echo of an earlier layer's.
    """
    records: list[LayerRouting] = []
    pending: dict[str, dict[str, Any]] = {}
    # Shared experts run before or after the routed ones depending on the model (DeepSeek
    # runs them after), so their calls are matched to router calls once the block ends.
    shared_calls: dict[str, list[SharedExpertsCall]] = {}
    calls: dict[str, int] = {}
    handles = []

    def on_router(layer: MoELayer) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            scores, weights, index = parse_router_output(output, layer.num_experts)
            state = pending.setdefault(layer.router_name, {})
            state.update(scores=_cpu(scores), weights=weights, index=index)
            call = calls.get(layer.router_name, 0)
            calls[layer.router_name] = call + 1
            if forced is None or index is None or weights is None:
                return None
            state.update(index=_cpu(index), weights=_cpu(weights))
            target = _forced_record(forced, layer.router_name, call)
            return _replace_routing(output, weights, index, target.weights, target.index)

        return hook

    def on_projection(layer: MoELayer) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            pending.setdefault(layer.router_name, {})["projection"] = _cpu(output).reshape(-1, layer.num_experts)

        return hook

    def on_shared(layer: MoELayer, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            result = _tensors(output)[0].detach()
            rows = result.reshape(-1, result.shape[-1])
            active = torch.isfinite(rows).all(-1) & (rows.abs().amax(-1) > 0)
            shared_calls.setdefault(layer.router_name, []).append(
                SharedExpertsCall(name, int(rows.shape[0]), int(active.sum()))
            )

        return hook

    def on_experts(layer: MoELayer) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            hidden, index, weights = parse_experts_arguments(args, kwargs)
            state = pending.pop(layer.router_name, {})
            records.append(_layer_routing(layer, state, hidden, index, weights))

        return hook

    for layer in layers:
        handles.append(layer.router.register_forward_hook(on_router(layer)))
        if layer.logits_projection is not None:
            handles.append(layer.logits_projection.register_forward_hook(on_projection(layer)))
        for name, module in layer.shared:
            handles.append(module.register_forward_hook(on_shared(layer, name)))
        handles.append(layer.experts.register_forward_pre_hook(on_experts(layer), with_kwargs=True))
    try:
        yield records
        _attach_shared_calls(layers, records, shared_calls)
    finally:
        for handle in handles:
            handle.remove()


def _forced_record(forced: RoutingCapture, router_name: str, call: int) -> LayerRouting:
    matching = [record for record in forced.layers if record.router_name == router_name]
    if call >= len(matching):
        raise MoEDiscoveryError(f"{router_name} ran {call + 1} times, but the forced routing has {len(matching)} calls")
    return matching[call]


def _replace_routing(
    output: Any, weights: torch.Tensor, index: torch.Tensor, new_weights: torch.Tensor, new_index: torch.Tensor
) -> Any:
    """Return the router output with its weights and index tensors swapped for the given ones."""
    if new_index.shape[0] != index.shape[0]:
        raise MoEDiscoveryError(f"forced routing has {new_index.shape[0]} tokens, the router saw {index.shape[0]}")
    replacements = {
        id(weights): new_weights.to(weights.device, weights.dtype),
        id(index): new_index.to(index.device, index.dtype),
    }
    return type(output)(replacements.get(id(item), item) for item in output)


def _attach_shared_calls(
    layers: list[MoELayer], records: list[LayerRouting], shared_calls: dict[str, list[SharedExpertsCall]]
) -> None:
    """Give each router call the shared-experts calls of the same layer and the same forward, in order."""
    per_call = {layer.router_name: len(layer.shared) for layer in layers}
    seen: dict[str, int] = {}
    for record in records:
        count = per_call.get(record.router_name, 0)
        call = seen.get(record.router_name, 0)
        seen[record.router_name] = call + 1
        record.shared = shared_calls.get(record.router_name, [])[call * count : (call + 1) * count]


def _layer_routing(
    layer: MoELayer, state: dict[str, Any], hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor
) -> LayerRouting:
    """Assemble one layer's record from what its hooks saw; pick the pre-softmax scores."""
    scores = state.get("scores")
    if scores is None:
        raise MoEDiscoveryError(f"{layer.experts_name} ran without a call to its router {layer.router_name}")
    scores = scores.reshape(-1, layer.num_experts)
    kind: ScoresKind = "probabilities" if looks_like_probabilities(scores) else "logits"
    if kind == "logits":
        logits, source = scores.float(), "router output"
    elif "projection" in state:
        logits, source = state["projection"].float(), "router projection output"
    else:
        # log(softmax(x)) is x minus a per-token constant, so margins between experts survive.
        logits, source = scores.float().clamp_min(torch.finfo(torch.float32).tiny).log(), "log of router probabilities"

    received_index, received_weights = _cpu(index).long(), _cpu(weights).float()
    decided = state.get("index") is not None and state.get("weights") is not None
    return LayerRouting(
        router_name=layer.router_name,
        experts_name=layer.experts_name,
        num_experts=layer.num_experts,
        logits=logits,
        scores_kind=kind,
        logits_source=source,
        index=_cpu(state["index"]).long() if decided else received_index,
        weights=_cpu(state["weights"]).float() if decided else received_weights,
        received_index=received_index,
        received_weights=received_weights,
        experts_input=_cpu(hidden),
        router_scores=scores,
        router_returns_routing=decided,
    )


def capture_routing(
    model: nn.Module,
    run: Callable[[], Any],
    layers: list[MoELayer] | None = None,
    forced: RoutingCapture | None = None,
) -> RoutingCapture:
    """Run ``run()`` once with every MoE layer of ``model`` hooked; return the routing and the output.

    With ``forced``, the experts receive the forced capture's routing (see :func:`recording_routing`).
    """
    layers = find_moe_layers(model) if layers is None else layers
    if not layers:
        raise MoEDiscoveryError(
            f"no MoE layer found in {type(model).__name__}: no module has fused 3-D expert parameters "
            "beside a router with a (num_experts, hidden) projection"
        )
    with recording_routing(layers, forced) as records:
        outputs = run()
    return RoutingCapture(records, outputs)


def experts_per_token(config: Any, layer: MoELayer) -> int:
    """Return how many experts the config routes each token to (``num_experts_per_tok`` or an alias)."""
    for name in ("num_experts_per_tok", "top_k_experts", "moe_topk", "num_selected_experts"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(layer.router, "top_k", None)
    if isinstance(value, int) and value > 0:
        return value
    raise MoEDiscoveryError(
        f"cannot tell how many experts {layer.router_name} picks per token: the config has no num_experts_per_tok "
        "or top_k_experts and the router no top_k"
    )


def replay_experts(
    experts: nn.Module, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Run ``experts`` on given hidden states and routing, in its own dtype and device; return the output in float32."""
    parameter = next(experts.parameters())
    with torch.inference_mode():
        output = experts(
            hidden.to(parameter.device, parameter.dtype),
            index.to(parameter.device),
            weights.to(parameter.device, parameter.dtype),
        )
    return output.detach().to("cpu", torch.float32)


def per_expert_outputs(experts: nn.Module, hidden: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Return every expert's output on every token, shaped (num_experts, tokens, hidden), in float32.

    Each token is sent to one expert at a time with weight 1, so expert ``e``'s rows show
    that expert's weights alone.
    """
    tokens = hidden.shape[0]
    repeated = hidden.repeat(num_experts, 1)
    index = torch.arange(num_experts).repeat_interleave(tokens).unsqueeze(-1)
    weights = torch.ones(index.shape, dtype=torch.float32)
    output = replay_experts(experts, repeated, index, weights)
    return output.reshape(num_experts, tokens, -1)


def tokens_layout(tokens: int, valid: torch.Tensor | None) -> tuple[int, int] | None:
    """Return (batch, seq_len) when ``tokens`` flattens a ``valid`` mask of that shape, else None."""
    if valid is None or valid.dim() != 2 or valid.numel() != tokens:
        return None
    return int(valid.shape[0]), int(valid.shape[1])


def token_position(token: int, layout: tuple[int, int] | None) -> tuple[int, int]:
    """Return the (batch row, position) of flattened token ``token``; (0, token) without a layout."""
    if layout is None:
        return 0, token
    return token // layout[1], token % layout[1]
