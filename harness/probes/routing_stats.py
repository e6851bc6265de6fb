"""Statistics over captured routing: agreement with a reference, classified flips, expert load.

A *flip* is a token whose top-k expert set differs from the reference's. Every flip gets
one of three causes:

- ``near tie``: the reference barely preferred its experts. Its logit margin between the
  experts the candidate dropped and those it picked is within the epsilon by which the
  dtype's rounding can move logits.
- ``downstream``: the token's row flipped in an earlier layer, and a forced run (every
  layer fed the reference's routing, see ``recording_routing``) routes this token like the
  reference, so the flip echoes the earlier one rather than this layer's numerics.
- ``unexplained``: neither. These fail a check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from harness.probes.routing import LayerRouting, RoutingCapture, token_position
from harness.probes.routing_invariants import GroupRouting

Cause = Literal["near tie", "downstream", "unexplained"]


@dataclass(frozen=True)
class TieEpsilon:
    """How far apart two reference logits may be for a flip between them to count as a near tie.

    The epsilon of a layer is ``atol + rtol * scale``, where ``scale`` is the largest
    per-token-centred reference logit of that layer.
    """

    atol: float
    rtol: float

    def of(self, scale: float) -> float:
        return self.atol + self.rtol * scale


@dataclass(frozen=True)
class Flip:
    """One token whose expert set differs from the reference's, with the reference's margins."""

    layer: str
    token: int
    row: int
    position: int
    reference_experts: list[int]
    experts: list[int]
    # The reference's logit margin across the swap (see flip_margin), and its plain margin
    # between the k-th and (k+1)-th expert.
    margin: float
    boundary_margin: float
    epsilon: float
    cause: Cause

    @property
    def explained(self) -> bool:
        return self.cause != "unexplained"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.layer} row {self.row} position {self.position}: experts {self.experts} instead of "
            f"{self.reference_experts}, reference margin {self.margin:.3g} > epsilon {self.epsilon:.3g}"
        )


@dataclass
class LayerAgreement:
    """One layer's agreement with the reference's routing over the real tokens."""

    layer: str
    tokens: int
    identical_fraction: float
    mean_jaccard: float
    weights_max_error: float
    logits_max_error: float
    epsilon: float
    flips: list[Flip]

    @property
    def unexplained(self) -> list[Flip]:
        return [flip for flip in self.flips if not flip.explained]

    def as_metrics(self) -> dict[str, Any]:
        causes = [flip.cause for flip in self.flips]
        return {
            "layer": self.layer,
            "tokens": self.tokens,
            "identical_fraction": self.identical_fraction,
            "mean_jaccard": self.mean_jaccard,
            "weights_max_error": self.weights_max_error,
            "logits_max_error": self.logits_max_error,
            "epsilon": self.epsilon,
            "flips": len(self.flips),
            "near_tie_flips": causes.count("near tie"),
            "downstream_flips": causes.count("downstream"),
            "unexplained_flips": causes.count("unexplained"),
        }


def centred(logits: torch.Tensor) -> torch.Tensor:
    """Subtract each token's mean logit, which softmax and top-k ignore (log-probabilities differ from logits by it)."""
    values = logits.double()
    return values - values.mean(-1, keepdim=True)


def flip_margin(logits: torch.Tensor, dropped: list[int], picked: list[int]) -> float:
    """Return the largest reference logit gap between an expert the candidate dropped and one it picked.

    A single swap of the k-th and (k+1)-th expert gives their plain margin. Swapping a clear
    winner for a distant expert gives a large one, whatever the boundary margin is.
    """
    return max(float(logits[out] - logits[into]) for out in dropped for into in picked)


def _group_margin(logits: torch.Tensor, groups: GroupRouting) -> float:
    """Return the reference margin between its ``topk_group``-th and next best group score."""
    if groups.topk_group >= groups.n_group:
        return float("inf")
    scores = logits.reshape(groups.n_group, -1).amax(-1).sort(descending=True).values
    return float(scores[groups.topk_group - 1] - scores[groups.topk_group])


def compare_routing(
    reference: RoutingCapture,
    candidate: RoutingCapture,
    forced: RoutingCapture | None,
    valid: torch.Tensor | None,
    epsilon: TieEpsilon,
    groups: GroupRouting | None = None,
) -> list[LayerAgreement]:
    """Compare a candidate's routing with the reference's, layer by layer, and classify every flip.

    ``forced`` is the candidate run again with the reference's routing forced on every
    layer; without it no flip can be called downstream.
    """
    if len(candidate.layers) != len(reference.layers):
        raise ValueError(
            f"the candidate routed through {len(candidate.layers)} MoE layers, the reference {len(reference.layers)}"
        )
    flipped_rows: set[int] = set()
    agreements = []
    for position, (reference_layer, candidate_layer) in enumerate(zip(reference.layers, candidate.layers, strict=True)):
        forced_layer = forced.layers[position] if forced is not None and position < len(forced.layers) else None
        agreement = compare_layer(reference_layer, candidate_layer, valid, epsilon, groups, forced_layer, flipped_rows)
        flipped_rows |= {flip.row for flip in agreement.flips}
        agreements.append(agreement)
    return agreements


def compare_layer(
    reference: LayerRouting,
    candidate: LayerRouting,
    valid: torch.Tensor | None,
    epsilon: TieEpsilon,
    groups: GroupRouting | None = None,
    forced: LayerRouting | None = None,
    flipped_rows: set[int] | None = None,
) -> LayerAgreement:
    """Compare one layer's routing with the reference's over the tokens ``valid`` marks; classify its flips.

    ``flipped_rows`` contains the batch rows that flipped in earlier layers.
    """
    if candidate.tokens != reference.tokens:
        raise ValueError(f"{candidate.router_name}: {candidate.tokens} tokens, the reference {reference.tokens}")
    mask = _token_mask(valid, reference.tokens)
    layout = _layout(valid, reference.tokens)
    reference_logits = centred(reference.logits)
    scale = float(reference_logits[mask].abs().max()) if mask.any() else 0.0
    context = _FlipContext(
        reference, reference_logits, epsilon.of(scale), groups, forced, flipped_rows or set(), layout
    )

    flips = []
    jaccards = []
    identical = torch.zeros(reference.tokens, dtype=torch.bool)
    for token in mask.nonzero().flatten().tolist():
        reference_set = set(reference.index[token].tolist())
        candidate_set = set(candidate.index[token].tolist())
        jaccards.append(len(reference_set & candidate_set) / len(reference_set | candidate_set))
        if reference_set == candidate_set:
            identical[token] = True
        else:
            flips.append(context.flip(token, candidate_set))

    logits_error = (centred(candidate.logits) - reference_logits)[mask].abs()
    return LayerAgreement(
        layer=reference.router_name,
        tokens=int(mask.sum()),
        identical_fraction=float(identical[mask].double().mean()) if mask.any() else 1.0,
        mean_jaccard=sum(jaccards) / len(jaccards) if jaccards else 1.0,
        weights_max_error=_weights_error(reference, candidate, identical),
        logits_max_error=float(logits_error.max()) if logits_error.numel() else 0.0,
        epsilon=context.epsilon,
        flips=flips,
    )


@dataclass
class _FlipContext:
    """The inputs for classifying one layer's flips: the reference, its epsilon, the forced run, earlier flips."""

    reference: LayerRouting
    logits: torch.Tensor
    epsilon: float
    groups: GroupRouting | None
    forced: LayerRouting | None
    flipped_rows: set[int]
    layout: tuple[int, int] | None

    def flip(self, token: int, candidate_set: set[int]) -> Flip:
        reference_set = set(self.reference.index[token].tolist())
        logits = self.logits[token]
        dropped = sorted(reference_set - candidate_set)
        picked = sorted(candidate_set - reference_set)
        k = len(reference_set)
        ordered = logits.sort(descending=True).values
        boundary = float(ordered[k - 1] - ordered[k]) if k < ordered.numel() else float("inf")
        margin = flip_margin(logits, dropped, picked) if dropped and picked else boundary
        if self.groups is not None and _groups_differ(reference_set, candidate_set, self.groups, logits.numel()):
            # A different group choice moves experts across groups; its tie is between group scores.
            margin = min(margin, _group_margin(logits, self.groups))
        row, position = token_position(token, self.layout)
        return Flip(
            layer=self.reference.router_name,
            token=token,
            row=row,
            position=position,
            reference_experts=sorted(reference_set),
            experts=sorted(candidate_set),
            margin=margin,
            boundary_margin=boundary,
            epsilon=self.epsilon,
            cause=self._cause(token, row, reference_set, margin),
        )

    def _cause(self, token: int, row: int, reference_set: set[int], margin: float) -> Cause:
        if margin <= self.epsilon:
            return "near tie"
        upstream = self.forced is not None and row in self.flipped_rows
        if upstream and set(self.forced.index[token].tolist()) == reference_set:
            return "downstream"
        return "unexplained"


def _groups_differ(first: set[int], second: set[int], groups: GroupRouting, num_experts: int) -> bool:
    size = num_experts // groups.n_group
    return {expert // size for expert in first} != {expert // size for expert in second}


def _weights_error(reference: LayerRouting, candidate: LayerRouting, tokens: torch.Tensor) -> float:
    """Return the largest weight difference on tokens routed identically, matching weights by expert id."""
    if not tokens.any():
        return 0.0
    reference_weights = reference.weights.gather(-1, reference.index.argsort(-1))[tokens]
    candidate_weights = candidate.weights.gather(-1, candidate.index.argsort(-1))[tokens]
    return float((reference_weights.double() - candidate_weights.double()).abs().max())


def _token_mask(valid: torch.Tensor | None, tokens: int) -> torch.Tensor:
    if valid is None or valid.numel() != tokens:
        return torch.ones(tokens, dtype=torch.bool)
    return valid.reshape(-1).bool().cpu()


def _layout(valid: torch.Tensor | None, tokens: int) -> tuple[int, int] | None:
    if valid is None or valid.dim() != 2 or valid.numel() != tokens:
        return None
    return int(valid.shape[0]), int(valid.shape[1])


@dataclass
class LoadStatistics:
    """A layer's spread of tokens over its experts: counts of (token, expert) assignments."""

    layer: str
    histogram: list[int]
    coefficient_of_variation: float
    max_load: int
    min_load: int
    dead_experts: list[int]

    def as_metrics(self) -> dict[str, Any]:
        return asdict(self)


def expert_load(record: LayerRouting, valid: torch.Tensor | None) -> LoadStatistics:
    """Count each expert's assignments over the real tokens; the coefficient of variation is std / mean."""
    mask = _token_mask(valid, record.tokens)
    chosen = record.index[mask].flatten()
    chosen = chosen[(chosen >= 0) & (chosen < record.num_experts)]
    histogram = torch.bincount(chosen, minlength=record.num_experts).double()
    mean = float(histogram.mean())
    spread = float(histogram.std(correction=0)) / mean if mean > 0 else 0.0
    return LoadStatistics(
        layer=record.router_name,
        histogram=[int(count) for count in histogram.tolist()],
        coefficient_of_variation=spread,
        max_load=int(histogram.max()),
        min_load=int(histogram.min()),
        dead_experts=[expert for expert, count in enumerate(histogram.tolist()) if count == 0],
    )
