"""The range recorder on small hand-built modules: headroom, input watching, the first non-finite module."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.probes.headroom import (
    FP16_MAX,
    first_nonfinite,
    headroom_by_module,
    lowest_headroom,
    module_kind,
    recording_ranges,
    tensor_range,
)

FLOAT16 = frozenset({"float16"})


class MultiplyBy(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class ScalesBeforeChild(nn.Module):
    """Multiplies in its own code, between submodules, as a residual sum or a cast would."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.child = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(x * self.factor)


def record(module: nn.Module, inputs: torch.Tensor):
    with recording_ranges(module) as recording, torch.no_grad():
        module(inputs)
    return recording.by_completion()


def test_tensor_range_counts_nonfinite_and_keeps_finite_range():
    measured = tensor_range(torch.tensor([1.0, -3.0, math.inf, math.nan]))

    assert measured.nonfinite == 2
    assert measured.min == -3.0
    assert measured.max == 1.0
    assert measured.max_abs == math.inf


def test_module_kind_classifies_norms_poolers_projections():
    assert module_kind(nn.LayerNorm(4)) == "norm"
    assert module_kind(nn.AdaptiveAvgPool1d(2)) == "pooler"
    assert module_kind(nn.Linear(4, 4)) == "projection"
    assert module_kind(nn.GELU()) == "other"


def test_first_nonfinite_names_module_that_multiplies_by_1e5():
    model = nn.Sequential(nn.Identity(), MultiplyBy(1e5), nn.Identity()).half()
    inputs = torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float16)
    records = record(model, inputs)
    reference = record(model.float(), inputs.float())

    found = first_nonfinite(records, reference)

    assert found is not None
    assert found.module == "1"
    assert found.class_name == "MultiplyBy"
    assert found.input.max == 1.0
    assert found.input.min == -2.0
    assert "first non-finite module: 1 [MultiplyBy]" in found.describe()
    assert "its inputs [-2, 1] (float16)" in found.describe()
    assert "fp32 output there is finite, max |x| 2e+05" in found.describe()


def test_first_nonfinite_names_parent_whose_own_code_overflows():
    model = nn.Sequential(ScalesBeforeChild(1e5)).half()
    records = record(model, torch.full((1, 2), 3.0, dtype=torch.float16))

    found = first_nonfinite(records)

    assert found is not None
    assert found.module == "0"
    assert found.seen_entering == "0.child"
    assert "in its own code (first seen entering 0.child)" in found.describe()


def test_first_nonfinite_skips_reference_nonfinite():
    model = nn.Sequential(MultiplyBy(math.inf))
    inputs = torch.ones(1, 2)

    assert first_nonfinite(record(model, inputs), record(model, inputs)) is None


def test_finite_run_has_no_nonfinite_module():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

    assert first_nonfinite(record(model, torch.ones(1, 2))) is None


def test_headroom_counts_norm_inputs_in_run_dtype():
    model = nn.Sequential(MultiplyBy(1000.0), nn.LayerNorm(4)).half()
    inputs = torch.tensor([[1.0, -2.0, 4.0, 8.0]], dtype=torch.float16)
    records = record(model, inputs)

    by_module = {headroom.module: headroom for headroom in headroom_by_module(records, FLOAT16)}

    assert by_module["1"].tensor == "input"
    assert by_module["1"].max_abs == 8000.0
    assert by_module["1"].headroom == pytest.approx(FP16_MAX / 8000.0)
    assert headroom_by_module(records, frozenset({"bfloat16"})) == []


def test_lowest_headroom_lists_tensor_once():
    # The Linear's random weights decide whether its output outgrows 8000; seed them.
    torch.manual_seed(0)
    model = nn.Sequential(MultiplyBy(1000.0), nn.Identity(), nn.Linear(4, 4)).half()
    records = record(model, torch.full((1, 4), 8.0, dtype=torch.float16))

    lowest = lowest_headroom(records, FLOAT16, count=3)

    # MultiplyBy's output passes through the Identity into the Linear's input: one tensor.
    assert lowest[0].module == "0"
    assert [item.max_abs for item in lowest].count(8000.0) == 1
    assert len({item.module for item in lowest}) == len(lowest)


def test_recorder_removes_its_hooks():
    model = nn.Sequential(nn.Linear(2, 2))
    record(model, torch.ones(1, 2))

    assert not model[0]._forward_hooks
    assert not model[0]._forward_pre_hooks
