"""Finding MoE layers by structure, capturing their routing, forcing it, replaying experts."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from harness.cases import curated_cases
from harness.cases.build import auto_class, build_config
from harness.probes.routing import (
    MoEDiscoveryError,
    capture_routing,
    find_moe_layers,
    fused_expert_count,
    per_expert_outputs,
    replay_experts,
    tokens_layout,
)
from tests.probes.moe_toy import EXPERTS, HIDDEN, TOP_K, ToyModel

MOE_CASES = [case for case in curated_cases() if case.is_moe]
# Router names of each curated MoE case, checked against transformers 5.25.0's module layout.
EXPECTED_ROUTERS = {
    "gemma4-moe-tiny": ["model.layers.0.router", "model.layers.1.router"],
    "mellum-tiny": ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
    "deepseek-ocr2-tiny": ["model.language_model.layers.1.mlp.gate"],
    "qwen3-moe-tiny": ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
    "mixtral-tiny": ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
    "olmoe-tiny": ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
    "deepseek-v2-tiny": ["model.layers.1.mlp.gate", "model.layers.2.mlp.gate"],
    "mellum-full-shape": [f"model.layers.{layer}.mlp.gate" for layer in range(28)],
}


def hidden_states(tokens: int = 6) -> torch.Tensor:
    return torch.randn(1, tokens, HIDDEN, generator=torch.Generator().manual_seed(1))


def test_toy_layers_found_by_structure():
    model = ToyModel(shared=True)
    layers = find_moe_layers(model)

    assert [layer.router_name for layer in layers] == ["layers.0.gate", "layers.1.gate"]
    assert [layer.experts_name for layer in layers] == ["layers.0.experts", "layers.1.experts"]
    assert layers[0].num_experts == EXPERTS
    assert [name for name, _ in layers[0].shared] == ["layers.0.shared_experts"]
    assert layers[0].logits_projection is None


@pytest.mark.parametrize("case", MOE_CASES, ids=lambda case: case.id)
def test_curated_moe_cases_found_by_structure(case):
    transformers.utils.logging.set_verbosity_error()
    with torch.device("meta"):
        model = auto_class(case.auto_class).from_config(build_config(case))

    layers = find_moe_layers(model)

    assert [layer.router_name for layer in layers] == EXPECTED_ROUTERS[case.id]
    shared = {name for layer in layers for name, _ in layer.shared}
    assert bool(shared) == case.model_type.startswith("deepseek")


def test_convolution_weights_are_not_experts():
    assert fused_expert_count(nn.Conv1d(4, 4, 3)) is None
    assert fused_expert_count(ToyModel().layers[0].experts) == EXPERTS


def test_experts_without_router_is_a_clear_error():
    model = ToyModel()
    del model.layers[0].gate

    with pytest.raises(MoEDiscoveryError, match=r"layers.0.experts \[ToyExperts\] has 4 fused experts.*none"):
        find_moe_layers(model)


def test_capture_records_logits_decision_and_shared_experts():
    model = ToyModel(shared=True)
    hidden = hidden_states()

    routing = capture_routing(model, lambda: model(hidden))

    first = routing.layers[0]
    expected_logits = nn.functional.linear(hidden.reshape(-1, HIDDEN), model.layers[0].gate.weight)
    assert [layer.router_name for layer in routing.layers] == ["layers.0.gate", "layers.1.gate"]
    assert first.scores_kind == "logits"
    assert torch.allclose(first.logits, expected_logits)
    assert first.index.shape == (6, TOP_K)
    assert torch.equal(first.index, first.received_index)
    assert [(call.tokens, call.active_tokens) for call in first.shared] == [(6, 6)]
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())


def test_probability_router_logits_come_from_its_projection():
    model = ToyModel(probabilities=True)
    hidden = hidden_states()

    routing = capture_routing(model, lambda: model(hidden))

    first = routing.layers[0]
    assert first.scores_kind == "probabilities"
    assert first.logits_source == "router projection output"
    assert torch.allclose(first.logits, model.layers[0].gate.proj(hidden.reshape(-1, HIDDEN)))


def test_forced_capture_feeds_forced_routing_and_records_own_decision():
    model = ToyModel()
    hidden = hidden_states()
    free = capture_routing(model, lambda: model(hidden))
    forced_target = capture_routing(model, lambda: model(hidden))
    for layer in forced_target.layers:
        layer.index = layer.index.flip(0)
        layer.weights = layer.weights.flip(0)

    forced = capture_routing(model, lambda: model(hidden), forced=forced_target)

    assert torch.equal(forced.layers[0].index, free.layers[0].index)
    assert torch.equal(forced.layers[0].received_index, forced_target.layers[0].index)
    assert torch.equal(forced.layers[1].received_index, forced_target.layers[1].index)


def test_per_expert_outputs_isolate_each_expert():
    experts = ToyModel().layers[0].experts
    hidden = hidden_states().reshape(-1, HIDDEN)

    outputs = per_expert_outputs(experts, hidden, EXPERTS)

    alone = replay_experts(experts, hidden, torch.full((6, 1), 2), torch.ones(6, 1))
    assert outputs.shape == (EXPERTS, 6, HIDDEN)
    assert torch.allclose(outputs[2], alone)
    assert not torch.allclose(outputs[1], outputs[2])


def test_tokens_layout_needs_one_token_per_position():
    valid = torch.ones(2, 3, dtype=torch.bool)

    assert tokens_layout(6, valid) == (2, 3)
    assert tokens_layout(7, valid) is None
    assert tokens_layout(6, None) is None
