"""Module recording and the first divergent module."""

from __future__ import annotations

import torch

from harness.probes.activations import first_divergence, locate_divergence, recording_module_outputs


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    )


def test_records_follow_completion_order():
    model = small_model()
    with recording_module_outputs(model) as records:
        model(torch.ones(1, 4))
    assert [record.name for record in records] == ["0", "1", "2.0", "2.1", "2"]


def test_hooks_are_removed_afterwards():
    model = small_model()
    with recording_module_outputs(model):
        pass
    assert all(not module._forward_hooks for module in model.modules())


def test_names_the_module_where_noise_enters():
    reference, candidate = small_model(), small_model()
    candidate[2][0].register_forward_hook(lambda module, args, output: output + 0.1)
    inputs = torch.ones(3, 4)

    divergence = locate_divergence(
        reference, candidate, lambda: reference(inputs), lambda: candidate(inputs), atol=1e-6, rtol=1e-5
    )

    assert divergence is not None
    assert divergence.module == "2.0"
    assert divergence.class_name == "Linear"
    assert divergence.max_abs_error > 0.09
    assert "first diverging module: 2.0 [Linear]" in divergence.describe()


def test_identical_runs_do_not_diverge():
    model = small_model()
    inputs = torch.ones(3, 4)
    with recording_module_outputs(model) as first:
        model(inputs)
    with recording_module_outputs(model) as second:
        model(inputs)
    assert first_divergence(first, second, atol=0.0, rtol=0.0) is None


def test_new_non_finite_value_diverges_even_within_tolerance():
    reference, candidate = small_model(), small_model()
    candidate[1].register_forward_hook(lambda module, args, output: output.masked_fill(output > 0, float("inf")))
    inputs = torch.ones(1, 4)

    divergence = locate_divergence(
        reference, candidate, lambda: reference(inputs), lambda: candidate(inputs), atol=1e9, rtol=1.0
    )
    assert divergence is not None
    assert divergence.module == "1"
