"""A toy MoE model laid out like Transformers 5's MoE blocks, and helpers to build routing records."""

from __future__ import annotations

import torch
from torch import nn

from harness.probes.routing import LayerRouting

HIDDEN = 8
EXPERTS = 4
TOP_K = 2


class ToyRouter(nn.Module):
    """Returns (logits, renormalized top-k weights, top-k index), like MixtralTopKRouter."""

    def __init__(self, probabilities: bool = False) -> None:
        super().__init__()
        self.probabilities = probabilities
        if probabilities:
            self.proj = nn.Linear(HIDDEN, EXPERTS, bias=False)
        else:
            self.weight = nn.Parameter(torch.randn(EXPERTS, HIDDEN))

    def forward(self, hidden):
        hidden = hidden.reshape(-1, HIDDEN)
        logits = self.proj(hidden) if self.probabilities else nn.functional.linear(hidden, self.weight)
        probabilities = logits.softmax(-1)
        weights, index = probabilities.topk(TOP_K, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        return (probabilities if self.probabilities else logits), weights, index


class ToyExperts(nn.Module):
    """Fused 3-D expert weights called as experts(hidden_states, top_k_index, top_k_weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(EXPERTS, 2 * 3, HIDDEN))
        self.down_proj = nn.Parameter(torch.randn(EXPERTS, HIDDEN, 3))

    def forward(self, hidden_states, top_k_index, top_k_weights):
        output = torch.zeros_like(hidden_states)
        for slot in range(top_k_index.shape[-1]):
            for expert in range(EXPERTS):
                tokens = top_k_index[:, slot] == expert
                if not tokens.any():
                    continue
                gate, up = nn.functional.linear(hidden_states[tokens], self.gate_up_proj[expert]).chunk(2, dim=-1)
                result = nn.functional.linear(nn.functional.silu(gate) * up, self.down_proj[expert])
                output[tokens] += result * top_k_weights[tokens, slot, None]
        return output


class ToyBlock(nn.Module):
    def __init__(self, probabilities: bool = False, shared: bool = False) -> None:
        super().__init__()
        self.gate = ToyRouter(probabilities)
        self.experts = ToyExperts()
        self.shared_experts = nn.Linear(HIDDEN, HIDDEN) if shared else None
        self.shared_expert_gate = nn.Linear(HIDDEN, 1) if shared else None

    def forward(self, hidden):
        flat = hidden.reshape(-1, HIDDEN)
        _, weights, index = self.gate(flat)
        output = self.experts(flat, index, weights)
        if self.shared_experts is not None:
            output = output + self.shared_experts(flat)
        return output.reshape(hidden.shape)


class ToyModel(nn.Module):
    def __init__(self, layers: int = 2, probabilities: bool = False, shared: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(ToyBlock(probabilities, shared) for _ in range(layers))

    def forward(self, hidden):
        for layer in self.layers:
            hidden = hidden + layer(hidden)
        return hidden


def record(logits, index, weights=None, name="layers.0.gate") -> LayerRouting:
    """Build a routing record from plain lists; weights default to the renormalized softmax of the chosen experts."""
    logits = torch.tensor(logits, dtype=torch.float32)
    index = torch.tensor(index, dtype=torch.long)
    if weights is None:
        chosen = logits.softmax(-1).gather(-1, index)
        weights = chosen / chosen.sum(-1, keepdim=True)
    else:
        weights = torch.tensor(weights, dtype=torch.float32)
    return LayerRouting(
        router_name=name,
        experts_name=name.replace("gate", "experts"),
        num_experts=logits.shape[-1],
        logits=logits,
        scores_kind="logits",
        logits_source="router output",
        index=index,
        weights=weights,
        received_index=index,
        received_weights=weights,
        experts_input=torch.zeros(logits.shape[0], HIDDEN),
        router_scores=logits,
    )
