"""Comparison metrics on tensors with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from harness.probes.compare import compare_outputs, next_token_kl, primary_output, select_valid


def test_identical_outputs_have_zero_error():
    x = torch.randn(2, 4, 8)
    comparison = compare_outputs(x, x.clone(), vocabulary=True)

    assert comparison.max_abs_error == 0
    assert comparison.rmse == 0
    assert comparison.cosine == pytest.approx(1.0)
    assert comparison.top1_agreement == 1.0
    assert comparison.kl_divergence == pytest.approx(0.0, abs=1e-12)


def test_errors_measured_on_valid_positions_only():
    reference = torch.zeros(2, 3, 4)
    output = reference.clone()
    output[0, 0] = 100.0
    valid = torch.tensor([[False, True, True], [True, True, True]])

    assert compare_outputs(output, reference, valid=valid).max_abs_error == 0
    assert compare_outputs(output, reference).max_abs_error == 100


def test_top1_counts_positions_whose_argmax_moved():
    reference = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    output = reference.clone()
    output[0, 0] = torch.tensor([0.0, 1.0])
    assert compare_outputs(output, reference, vocabulary=True).top1_agreement == 0.75


def test_kl_of_known_distributions():
    reference = torch.log(torch.tensor([[0.5, 0.5]]))
    output = torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert next_token_kl(output, reference) == pytest.approx(expected)


def test_nonfinite_values_are_counted():
    output = torch.tensor([1.0, float("inf"), float("nan")])
    comparison = compare_outputs(output, torch.ones(3))
    assert comparison.nonfinite == 2
    assert comparison.max_abs_error == math.inf


def test_float64_reference_gives_noise_floor():
    exact = torch.linspace(0, 1, 100, dtype=torch.float64)
    reference = exact.float() + 1e-6
    output = exact.float() + 3e-6
    comparison = compare_outputs(output, reference, float64_reference=exact)

    assert comparison.noise_floor_rmse == pytest.approx(1e-6, rel=1e-2)
    assert comparison.rmse_vs_float64 == pytest.approx(3e-6, rel=1e-2)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"output shape \(2,\) differs from reference shape \(3,\)"):
        compare_outputs(torch.zeros(2), torch.zeros(3))


def test_primary_output_prefers_logits():
    class Outputs:
        logits = torch.ones(1)
        last_hidden_state = torch.zeros(1)

    assert primary_output(Outputs()) is Outputs.logits


def test_select_valid_leaves_other_shapes_whole():
    tensor = torch.zeros(5, 7)
    assert select_valid(tensor, torch.ones(2, 3, dtype=torch.bool)) is tensor
