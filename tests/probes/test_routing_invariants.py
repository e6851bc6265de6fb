"""Router invariants on hand-made routing records and configs."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from harness.probes.routing import MoELayer, SharedExpertsCall
from harness.probes.routing_invariants import (
    check_layer,
    declared_normalization,
    group_routing,
    group_routing_problems,
    weights_rule,
)
from tests.probes.moe_toy import record

LOGITS = [[4.0, 3.0, 1.0, 0.0], [0.0, 1.0, 2.0, 5.0]]
LAYOUT = (1, 2)


def layer(shared=()):
    return MoELayer("layers.0.gate", torch.nn.Identity(), "layers.0.experts", torch.nn.Identity(), 4, tuple(shared))


def config(**fields):
    return SimpleNamespace(**fields)


def violations(routing, top_k=2, **fields):
    return check_layer(layer(), routing, config(**fields), top_k, 1e-5, LAYOUT).violations


def test_top_k_of_logits_passes():
    assert violations(record(LOGITS, [[0, 1], [3, 2]])) == []


def test_fewer_experts_than_top_k_named():
    found = violations(record(LOGITS, [[0], [3]]))

    assert found == ["layers.0.gate: routes each token to 1 experts; the config asks for 2"]


def test_repeated_expert_named_with_token():
    found = violations(record(LOGITS, [[0, 0], [3, 2]]))

    assert len(found) == 1
    assert "fewer than 2 distinct experts for 1 of 2 tokens, at (row, position) (0, 0)" in found[0]


def test_expert_id_out_of_range_named():
    found = violations(record(LOGITS, [[0, 4], [3, 2]], weights=[[0.5, 0.5], [0.5, 0.5]]))

    assert any("expert ids outside [0, 4)" in text for text in found)


def test_experts_not_top_k_of_logits_named():
    found = violations(record(LOGITS, [[0, 2], [3, 2]]))

    assert found == [
        "layers.0.gate: chosen experts are not the top-2 of the router's logits for 1 of 2 tokens, "
        "at (row, position) (0, 0)"
    ]


def test_experts_received_other_than_router_returned():
    routing = record(LOGITS, [[0, 1], [3, 2]])
    routing.received_index = torch.tensor([[0, 1], [3, 1]])

    found = violations(routing)

    assert any("the experts received other expert ids than the router returned" in text for text in found)


def test_norm_topk_prob_true_needs_weights_summing_to_one():
    routing = record(LOGITS, [[0, 1], [3, 2]], weights=[[0.5, 0.3], [0.6, 0.4]])

    found = violations(routing, norm_topk_prob=True)

    assert found == [
        "layers.0.gate: norm_topk_prob is True but weights sum to 0.8, not 1, "
        "for 1 of 2 tokens, at (row, position) (0, 0)"
    ]


def test_routed_scaling_factor_scales_the_expected_sum():
    routing = record(LOGITS, [[0, 1], [3, 2]])
    routing.weights = routing.weights * 2.5

    assert violations(routing, norm_topk_prob=True, routed_scaling_factor=2.5) == []


def test_norm_topk_prob_false_needs_softmax_probabilities():
    renormalized = record(LOGITS, [[0, 1], [3, 2]])
    probabilities = torch.tensor(LOGITS).softmax(-1).gather(-1, renormalized.index)
    plain = record(LOGITS, [[0, 1], [3, 2]], weights=probabilities.tolist())

    assert violations(plain, norm_topk_prob=False) == []
    assert (
        "norm_topk_prob is False but weights are not the softmax probabilities"
        in violations(renormalized, norm_topk_prob=False)[0]
    )


def test_weights_rule_names_what_weights_follow():
    renormalized = record(LOGITS, [[0, 1], [3, 2]])
    probabilities = torch.tensor(LOGITS).softmax(-1).gather(-1, renormalized.index)

    assert weights_rule(renormalized, 1.0, 1e-5) == "renormalized"
    assert weights_rule(record(LOGITS, [[0, 1], [3, 2]], weights=probabilities.tolist()), 1.0, 1e-5) == "softmax"
    assert declared_normalization(config()) is None


def test_group_limited_routing_keeps_experts_in_selected_groups():
    # Groups {0, 1} and {2, 3}; with topk_group 1 token 0's best group is {0, 1}.
    groups = {"n_group": 2, "topk_group": 1, "topk_method": "group_limited_greedy"}
    inside = record([[4.0, 3.0, 3.5, 0.0]], [[0, 1]])
    outside = record([[4.0, 3.0, 3.5, 0.0]], [[0, 2]])

    assert violations(inside, **groups) == []
    found = violations(outside, **groups)
    assert "experts span more than topk_group 1 groups for 1 of 1 tokens" in found[0]
    assert "experts lie outside the top 1 of 2 groups for 1 of 1 tokens" in found[1]


def test_greedy_topk_method_ignores_groups():
    assert group_routing(config(n_group=2, topk_group=1, topk_method="greedy")) is None
    assert group_routing(config(n_group=None, topk_group=None)) is None


def test_invalid_group_config_rejected_with_reasons():
    problems = group_routing_problems(config(n_group=3, topk_group=4, topk_method="group_limited_greedy"), 8, 2)

    assert problems == ["n_group 3 does not divide the 8 routed experts", "topk_group 4 exceeds n_group 3"]
    assert group_routing_problems(config(n_group=4, topk_group=1), 8, 3) == [
        "num_experts_per_tok 3 exceeds the 2 experts in 1 selected groups"
    ]
    assert group_routing_problems(config(n_group=4, topk_group=2), 8, 3) == []


def test_shared_experts_must_run_on_every_token():
    shared_layer = layer(shared=[("layers.0.shared_experts", torch.nn.Identity())])
    routing = record(LOGITS, [[0, 1], [3, 2]])
    routing.shared = [SharedExpertsCall("layers.0.shared_experts", 2, 1)]

    found = check_layer(shared_layer, routing, config(), 2, 1e-5, LAYOUT).violations

    assert found == ["layers.0.gate: shared experts layers.0.shared_experts left 1 of 2 tokens zero or non-finite"]


def test_declared_shared_experts_must_exist():
    found = check_layer(layer(), record(LOGITS, [[0, 1], [3, 2]]), config(n_shared_experts=1), 2, 1e-5, LAYOUT)

    assert found.violations == [
        "layers.0.gate: the config declares shared experts (1) but none sit beside layers.0.experts"
    ]
