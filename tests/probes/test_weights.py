"""The weight-integrity probe on small modules: each outcome, and the weight a layer applies."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.backends.quantized import SCHEMES_BY_NAME
from harness.probes.weights import inspect_weights, weight_applied_by

INT8 = SCHEMES_BY_NAME["int8wo"]


@pytest.fixture
def float_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32))
    torch.nn.init.normal_(model[1].weight, mean=1.0, std=0.1)
    return model


def _quantized(float_model: torch.nn.Module) -> torch.nn.Module:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = copy.deepcopy(float_model)
    quantize_(model, Int8WeightOnlyConfig())
    return model


def _inspect(float_model, quantized_model):
    return inspect_weights(
        float_model,
        quantized_model,
        label=INT8.label,
        bound=INT8.weight_error_bound,
        dtype="fp32",
        initializer_std=0.02,
    )


def _problems(report) -> dict[str, str]:
    return {record.name: record.problem for record in report.problems}


def test_quantized_linear_within_bound(float_model):
    report = _inspect(float_model, _quantized(float_model))
    records = {record.name: record for record in report.records}

    assert report.problems == []
    assert records["0.weight"].quantized
    assert records["0.weight"].error <= records["0.weight"].bound
    assert records["1.weight"].kept_reason == "norm parameters are not weight-quantized"
    assert report.coverage()["linear"].quantized_parameters == 64 * 32


def test_zeroed_weight_named(float_model):
    quantized = _quantized(float_model)
    quantized[0].weight.qdata.zero_()

    problems = _problems(_inspect(float_model, quantized))

    assert list(problems) == ["0.weight"]
    assert problems["0.weight"].startswith("all zeros, where the checkpoint's weight has max |w|")


def test_reinitialized_weight_named(float_model):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantized = copy.deepcopy(float_model)
    torch.nn.init.normal_(quantized[0].weight, std=0.02)
    quantize_(quantized, Int8WeightOnlyConfig())

    problems = _problems(_inspect(float_model, quantized))

    assert list(problems) == ["0.weight"]
    assert problems["0.weight"].startswith("holds a freshly initialized value, not the checkpoint's")
    assert "the initializer's std is 0.02" in problems["0.weight"]


def test_constant_initial_value_named(float_model):
    quantized = _quantized(float_model)
    torch.nn.init.ones_(quantized[1].weight)

    problems = _problems(_inspect(float_model, quantized))

    assert problems == {"1.weight": "every element is 1, a constant initial value, not the checkpoint's weight"}


def test_missing_weight_named(float_model):
    quantized = _quantized(float_model)
    del quantized[1]

    problems = _problems(_inspect(float_model, quantized))

    assert problems == {"1.weight": "missing from the quantized model", "1.bias": "missing from the quantized model"}


def test_linear_left_in_float_named(float_model):
    problems = _problems(_inspect(float_model, copy.deepcopy(float_model)))

    assert problems == {"0.weight": f"left in float although {INT8.label} converts this linear layer"}


def test_modules_not_converted_are_kept(float_model):
    report = inspect_weights(
        float_model,
        copy.deepcopy(float_model),
        label=INT8.label,
        bound=INT8.weight_error_bound,
        dtype="fp32",
        not_converted=["0"],
    )

    assert report.problems == []
    assert report.records[0].kept_reason == "listed in the quantizer's modules_to_not_convert"


def test_weight_applied_by_plain_linear(float_model):
    assert torch.allclose(weight_applied_by(float_model[0]), float_model[0].weight, atol=1e-6)


def test_weight_applied_by_quantized_linear(float_model):
    quantized = _quantized(float_model)

    applied = weight_applied_by(quantized[0])

    assert torch.allclose(applied, quantized[0].weight.dequantize(), atol=1e-6)
