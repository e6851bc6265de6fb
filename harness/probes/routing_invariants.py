"""Rules every router must keep, checked on one captured forward.

Per token: exactly ``num_experts_per_tok`` distinct experts, all in range, the top-k of the
router's own logits; the experts receive what the router returned; weights are finite and
normalized when the config requests it (``norm_topk_prob``); with group-limited routing
(DeepSeek's ``n_group`` / ``topk_group``) every chosen expert lies in one of the selected
groups; shared experts run on every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.probes.routing import LayerRouting, MoELayer, token_position

# Config fields that declare shared experts, always active beside the routed ones.
_SHARED_EXPERT_FIELDS = ("n_shared_experts", "num_shared_experts", "shared_expert_intermediate_size")
# topk_method values that pick experts without looking at groups.
_UNGROUPED_METHODS = ("greedy",)
# Violations listed per layer and rule before the rest are only counted.
_EXAMPLES = 3


@dataclass(frozen=True)
class GroupRouting:
    """DeepSeek-style group-limited routing: experts split into ``n_group`` groups, tokens use ``topk_group``."""

    n_group: int
    topk_group: int

    def group_of(self, experts: torch.Tensor, num_experts: int) -> torch.Tensor:
        return experts // (num_experts // self.n_group)


def group_routing(config: Any) -> GroupRouting | None:
    """Return the config's group-limited routing, or None when it routes without groups."""
    n_group = getattr(config, "n_group", None)
    topk_group = getattr(config, "topk_group", None)
    if n_group is None or topk_group is None:
        return None
    if getattr(config, "topk_method", None) in _UNGROUPED_METHODS:
        return None
    return GroupRouting(int(n_group), int(topk_group))


def group_routing_problems(config: Any, num_experts: int, top_k: int) -> list[str]:
    """Return why the config's group-limited routing cannot be honoured; empty when it can.

    Transformers 5.25.0 does not reject these at construction. A ``topk_group`` above
    ``n_group`` raises in the first forward. An ``n_group`` that does not divide the expert
    count raises for most token counts. But when tokens x experts happens to divide evenly,
    DeepSeek-V2's router ``view`` regroups scores across tokens and routes with no error.
    """
    groups = group_routing(config)
    if groups is None:
        return []
    problems = []
    if groups.n_group < 1 or groups.topk_group < 1:
        problems.append(f"n_group {groups.n_group} and topk_group {groups.topk_group} must be positive")
        return problems
    if num_experts % groups.n_group:
        problems.append(f"n_group {groups.n_group} does not divide the {num_experts} routed experts")
    if groups.topk_group > groups.n_group:
        problems.append(f"topk_group {groups.topk_group} exceeds n_group {groups.n_group}")
    reachable = groups.topk_group * (num_experts // groups.n_group)
    if top_k > reachable:
        problems.append(
            f"num_experts_per_tok {top_k} exceeds the {reachable} experts in {groups.topk_group} selected groups"
        )
    return problems


def declared_normalization(config: Any) -> bool | None:
    """Return the config's ``norm_topk_prob``, or None when the config does not set it."""
    value = getattr(config, "norm_topk_prob", None)
    return bool(value) if value is not None else None


def weights_scale(config: Any) -> float:
    """Return the factor weights are multiplied by after normalization: DeepSeek's ``routed_scaling_factor``, else 1."""
    value = getattr(config, "routed_scaling_factor", None)
    return float(value) if value is not None else 1.0


def declared_shared_experts(config: Any) -> int:
    """Return how many shared experts (or shared-expert width) the config declares; 0 for none."""
    for name in _SHARED_EXPERT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def weights_rule(record: LayerRouting, scale: float, tolerance: float) -> str:
    """Name the weights' rule: ``renormalized``, ``softmax`` (the chosen experts' probabilities) or ``other``."""
    chosen = _chosen_probabilities(record) * scale
    if bool(((record.weights.sum(-1) - scale).abs() <= tolerance).all()):
        return "renormalized"
    if bool(((record.weights - chosen).abs() <= tolerance).all()):
        return "softmax"
    return "other"


def _chosen_probabilities(record: LayerRouting) -> torch.Tensor:
    probabilities = torch.softmax(record.logits.double(), dim=-1)
    return probabilities.gather(-1, record.index).float()


@dataclass
class InvariantReport:
    """The violations found in one layer, as sentences, and the weights rule seen there."""

    layer: str
    violations: list[str]
    weights_rule: str


def check_layer(
    layer: MoELayer,
    record: LayerRouting,
    config: Any,
    top_k: int,
    weight_tolerance: float,
    layout: tuple[int, int] | None,
) -> InvariantReport:
    """Check one layer's captured routing against every rule; return what broke."""
    violations: list[str] = []
    violations += _count_violations(record, top_k, layout)
    if not violations:
        groups = group_routing(config)
        violations += _group_violations(record, groups, layout)
        violations += _selection_violations(record, top_k, groups, layout)
    violations += _handoff_violations(record, layout)

    scale = weights_scale(config)
    rule = weights_rule(record, scale, weight_tolerance) if not violations else "not checked"
    violations += _weights_violations(record, declared_normalization(config), scale, weight_tolerance, layout)
    violations += _shared_violations(layer, record, declared_shared_experts(config))
    return InvariantReport(record.router_name, [f"{record.router_name}: {text}" for text in violations], rule)


def _tokens(mask: torch.Tensor, layout: tuple[int, int] | None) -> str:
    """Describe the first flagged tokens as (batch row, position) pairs, and how many there are."""
    flagged = mask.nonzero().flatten().tolist()
    shown = ", ".join(str(token_position(token, layout)) for token in flagged[:_EXAMPLES])
    more = f" and {len(flagged) - _EXAMPLES} more" if len(flagged) > _EXAMPLES else ""
    return f"{len(flagged)} of {mask.numel()} tokens, at (row, position) {shown}{more}"


def _count_violations(record: LayerRouting, top_k: int, layout: tuple[int, int] | None) -> list[str]:
    index = record.index
    if index.dim() != 2 or index.shape[-1] != top_k:
        return [f"routes each token to {index.shape[-1]} experts; the config asks for {top_k}"]
    problems = []
    out_of_range = ((index < 0) | (index >= record.num_experts)).any(-1)
    if out_of_range.any():
        problems.append(f"expert ids outside [0, {record.num_experts}) for {_tokens(out_of_range, layout)}")
    distinct = index.sort(-1).values.diff(dim=-1).ne(0).sum(-1) + 1
    repeated = distinct < top_k
    if repeated.any():
        problems.append(f"fewer than {top_k} distinct experts for {_tokens(repeated, layout)}")
    return problems


def _selection_violations(
    record: LayerRouting, top_k: int, groups: GroupRouting | None, layout: tuple[int, int] | None
) -> list[str]:
    """Flag tokens whose chosen experts are not the top-k of the router's logits among the experts they may use."""
    allowed = _allowed_experts(record, groups)
    chosen = torch.zeros_like(allowed).scatter(-1, record.index, True)
    logits = record.logits.masked_fill(~allowed & ~chosen, float("-inf"))
    lowest_chosen = logits.masked_fill(~chosen, float("inf")).amin(-1)
    highest_other = logits.masked_fill(chosen, float("-inf")).amax(-1)
    wrong = highest_other > lowest_chosen + _slack(record)
    if wrong.any():
        where = "" if groups is None else " in the selected groups"
        return [f"chosen experts are not the top-{top_k} of the router's logits{where} for {_tokens(wrong, layout)}"]
    return []


def _slack(record: LayerRouting) -> torch.Tensor:
    """Return how far apart two logits may be and still count as tied, per token.

    Equal logits may be picked in either order; logits recovered from probabilities carry
    float32 rounding.
    """
    return 1e-6 * record.logits.abs().amax(-1).clamp_min(1.0)


def _group_scores(record: LayerRouting, groups: GroupRouting) -> torch.Tensor:
    """Return (tokens, n_group) group scores: a group's score is its best expert's logit."""
    size = record.num_experts // groups.n_group
    return record.logits.reshape(-1, groups.n_group, size).amax(-1)


def _allowed_experts(record: LayerRouting, groups: GroupRouting | None) -> torch.Tensor:
    """Return which experts each token may use: all, or those of its top ``topk_group`` groups."""
    if groups is None:
        return torch.ones_like(record.logits, dtype=torch.bool)
    scores = _group_scores(record, groups)
    selected = torch.zeros_like(scores, dtype=torch.bool).scatter(
        -1, scores.topk(groups.topk_group, dim=-1).indices, True
    )
    return selected.repeat_interleave(record.num_experts // groups.n_group, dim=-1)


def _group_violations(record: LayerRouting, groups: GroupRouting | None, layout: tuple[int, int] | None) -> list[str]:
    """Flag tokens whose experts span more than ``topk_group`` groups or lie outside the best groups."""
    if groups is None:
        return []
    scores = _group_scores(record, groups)
    threshold = scores.topk(groups.topk_group, dim=-1).values[:, -1:]
    chosen_groups = groups.group_of(record.index, record.num_experts)
    outside = (scores.gather(-1, chosen_groups) < threshold - _slack(record).unsqueeze(-1)).any(-1)
    distinct = chosen_groups.sort(-1).values.diff(dim=-1).ne(0).sum(-1) + 1
    too_many = distinct > groups.topk_group

    problems = []
    if too_many.any():
        problems.append(f"experts span more than topk_group {groups.topk_group} groups for {_tokens(too_many, layout)}")
    if outside.any():
        problems.append(
            f"experts lie outside the top {groups.topk_group} of {groups.n_group} groups for {_tokens(outside, layout)}"
        )
    return problems


def _handoff_violations(record: LayerRouting, layout: tuple[int, int] | None) -> list[str]:
    """Flag tokens whose experts received a routing other than the one their router returned."""
    if not record.router_returns_routing or record.received_index.shape != record.index.shape:
        return []
    differs = (record.received_index.sort(-1).values != record.index.sort(-1).values).any(-1)
    if differs.any():
        return [f"the experts received other expert ids than the router returned for {_tokens(differs, layout)}"]
    return []


def _weights_violations(
    record: LayerRouting,
    normalized: bool | None,
    scale: float,
    tolerance: float,
    layout: tuple[int, int] | None,
) -> list[str]:
    weights = record.weights
    if not torch.isfinite(weights).all():
        return [f"non-finite routing weights for {_tokens(~torch.isfinite(weights).all(-1), layout)}"]
    if (weights < 0).any():
        return [f"negative routing weights for {_tokens((weights < 0).any(-1), layout)}"]
    if normalized is None:
        return []

    sums = weights.sum(-1)
    if normalized:
        wrong = (sums - scale).abs() > tolerance
        if wrong.any():
            return [
                f"norm_topk_prob is True but weights sum to {float(sums[wrong][0]):.4g}, not {scale:g}, "
                f"for {_tokens(wrong, layout)}"
            ]
        return []
    if record.index.shape[-1] >= record.num_experts:
        return []
    wrong = ((weights - _chosen_probabilities(record) * scale).abs() > tolerance).any(-1)
    if wrong.any():
        return [
            "norm_topk_prob is False but weights are not the softmax probabilities of the chosen experts "
            f"for {_tokens(wrong, layout)}"
        ]
    return []


def _shared_violations(layer: MoELayer, record: LayerRouting, declared: int) -> list[str]:
    if declared and not layer.shared:
        return [f"the config declares shared experts ({declared}) but none sit beside {layer.experts_name}"]
    if layer.shared and len(record.shared) < len(layer.shared):
        ran = {call.name for call in record.shared}
        missing = [name for name, _ in layer.shared if name not in ran]
        return [f"shared experts {', '.join(missing)} did not run"]
    problems = []
    for call in record.shared:
        if call.tokens != record.tokens:
            problems.append(f"shared experts {call.name} saw {call.tokens} tokens of {record.tokens}")
        elif call.active_tokens != call.tokens:
            problems.append(
                f"shared experts {call.name} left {call.tokens - call.active_tokens} of {call.tokens} tokens "
                "zero or non-finite"
            )
    return problems
