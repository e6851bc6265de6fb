"""Agreement with a reference, flip classification and expert load."""

from __future__ import annotations

import pytest
import torch

from harness.probes.routing import RoutingCapture
from harness.probes.routing_invariants import GroupRouting
from harness.probes.routing_stats import TieEpsilon, compare_layer, compare_routing, expert_load, flip_margin
from tests.probes.moe_toy import record

# Token 0 has a near tie between experts 1 and 2; token 1 a clear order.
LOGITS = [[2.0, 1.0, 0.999, -3.0], [3.0, 2.0, 0.0, -1.0]]
EPSILON = TieEpsilon(atol=0.0, rtol=0.01)


def test_identical_routing_agrees_fully():
    reference = record(LOGITS, [[0, 1], [0, 1]])

    agreement = compare_layer(reference, record(LOGITS, [[1, 0], [0, 1]]), None, EPSILON)

    assert agreement.identical_fraction == 1.0
    assert agreement.mean_jaccard == 1.0
    assert agreement.flips == []
    assert agreement.weights_max_error == pytest.approx(0.0, abs=1e-7)


def test_flip_at_near_tie_is_explained():
    reference = record(LOGITS, [[0, 1], [0, 1]])

    agreement = compare_layer(reference, record(LOGITS, [[0, 2], [0, 1]]), None, EPSILON)

    flip = agreement.flips[0]
    assert agreement.identical_fraction == 0.5
    assert agreement.mean_jaccard == pytest.approx((1 + 1 / 3) / 2)
    assert flip.cause == "near tie"
    assert flip.margin == pytest.approx(0.001, abs=1e-6)
    # The scale is the largest logit after centring each token: |-3 - mean(2, 1, 0.999, -3)|.
    assert flip.epsilon == pytest.approx(0.01 * 3.24975)


def test_clear_winner_swapped_for_distant_expert_is_unexplained():
    reference = record(LOGITS, [[0, 1], [0, 1]])

    agreement = compare_layer(reference, record(LOGITS, [[1, 2], [0, 1]]), None, EPSILON)

    flip = agreement.flips[0]
    assert flip.cause == "unexplained"
    assert flip.margin == pytest.approx(1.001, abs=1e-5)
    assert flip.boundary_margin == pytest.approx(0.001, abs=1e-6)
    assert "layers.0.gate row 0 position 0: experts [1, 2] instead of [0, 1]" in flip.describe()


def test_flip_margin_takes_largest_gap_across_swap():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])

    assert flip_margin(logits, dropped=[0, 1], picked=[2, 3]) == 3.0


def test_padding_positions_are_ignored():
    reference = record(LOGITS, [[0, 1], [0, 1]])
    valid = torch.tensor([[False, True]])

    agreement = compare_layer(reference, record(LOGITS, [[2, 3], [0, 1]]), valid, EPSILON)

    assert agreement.tokens == 1
    assert agreement.flips == []


def test_echo_of_earlier_flip_is_downstream_only_when_forced_run_agrees():
    first = record(LOGITS, [[0, 1], [0, 1]], name="layers.0.gate")
    second = record(LOGITS, [[0, 1], [0, 1]], name="layers.1.gate")
    reference = RoutingCapture([first, second])
    candidate = RoutingCapture(
        [record(LOGITS, [[0, 2], [0, 1]], name="layers.0.gate"), record(LOGITS, [[0, 3], [0, 1]], name="layers.1.gate")]
    )
    agrees = RoutingCapture([first, second])
    disagrees = RoutingCapture([first, record(LOGITS, [[0, 3], [0, 1]], name="layers.1.gate")])
    valid = torch.ones(1, 2, dtype=torch.bool)

    echoed = compare_routing(reference, candidate, agrees, valid, EPSILON)
    own = compare_routing(reference, candidate, disagrees, valid, EPSILON)
    unforced = compare_routing(reference, candidate, None, valid, EPSILON)

    assert [flip.cause for flip in echoed[0].flips] == ["near tie"]
    assert [flip.cause for flip in echoed[1].flips] == ["downstream"]
    assert [flip.cause for flip in own[1].flips] == ["unexplained"]
    assert [flip.cause for flip in unforced[1].flips] == ["unexplained"]


def test_group_choice_flip_judged_by_group_margin():
    # Groups {0, 1} and {2, 3} are near-tied at 2.0 and 1.999; each expert pair is far apart.
    logits = [[2.0, -5.0, 1.999, -5.0]]
    reference = record(logits, [[0, 1]])
    candidate = record(logits, [[2, 3]])

    grouped = compare_layer(reference, candidate, None, EPSILON, GroupRouting(n_group=2, topk_group=1))
    plain = compare_layer(reference, candidate, None, EPSILON)

    assert grouped.flips[0].cause == "near tie"
    assert plain.flips[0].cause == "unexplained"


def test_expert_load_counts_assignments_of_real_tokens():
    routing = record([[0.0] * 4] * 3, [[0, 1], [0, 2], [3, 2]], weights=[[0.5, 0.5]] * 3)
    valid = torch.tensor([[True, True, False]])

    load = expert_load(routing, valid)

    assert load.histogram == [2, 1, 1, 0]
    assert load.max_load == 2
    assert load.min_load == 0
    assert load.dead_experts == [3]
    assert load.coefficient_of_variation == pytest.approx(torch.tensor([2.0, 1, 1, 0]).std(correction=0).item() / 1.0)
