"""The tolerance table and verdicts."""

from __future__ import annotations

import math

import pytest

from harness.probes.compare import OutputComparison
from harness.tolerances import Tolerance, judge, tolerance_for


def comparison(**changes):
    fields = {
        "numel": 100,
        "nonfinite": 0,
        "reference_max_abs": 1.0,
        "max_abs_error": 0.0,
        "rmse": 0.0,
        "relative_rmse": 0.0,
        "cosine": 1.0,
    }
    fields.update(changes)
    return OutputComparison(**fields)


def test_every_dtype_of_eager_has_an_entry_with_a_reason():
    for dtype in ("fp32", "bf16", "fp16"):
        tolerance = tolerance_for("eager", dtype, "llama-tiny")
        assert tolerance.source == f"table eager/{dtype}"
        assert tolerance.reason


def test_case_override_replaces_named_criteria_and_keeps_the_rest():
    base = tolerance_for("eager", "bf16", "llama-tiny")
    override = tolerance_for("eager", "bf16", "gemma4-tiny")

    assert override.source == "override gemma4-tiny eager/bf16"
    assert "Gemma 4" in override.reason
    assert override.rtol > base.rtol
    assert override.max_rmse_ratio == base.max_rmse_ratio


def test_unknown_dtype_names_the_pair():
    with pytest.raises(ValueError, match="no tolerance for family 'eager' and dtype 'fp8'"):
        tolerance_for("eager", "fp8", "llama-tiny")


def test_error_within_tolerance_passes_with_margin():
    verdict = judge(comparison(max_abs_error=0.25), Tolerance(atol=0.0, rtol=1.0), "fp32")
    assert verdict.passed
    assert verdict.margin == pytest.approx(0.75)
    assert verdict.limiting == "max_abs_error"


def test_error_beyond_tolerance_fails_and_says_by_how_much():
    verdict = judge(comparison(max_abs_error=2.0), Tolerance(atol=0.5, rtol=0.0), "fp32")
    assert not verdict.passed
    assert verdict.margin == pytest.approx(-3.0)
    assert verdict.failures == ["max abs error 2 > allowed 0.5"]


def test_rmse_ratio_scales_the_noise_floor_by_epsilon():
    measured = comparison(rmse_vs_float64=1e-3, noise_floor_rmse=1e-7)
    tolerance = Tolerance(max_rmse_ratio=3.0)

    # bf16's epsilon is 2**16 times fp32's: the floor becomes 6.6e-3, the limit 2e-2.
    assert judge(measured, tolerance, "bf16").passed
    assert not judge(measured, tolerance, "fp32").passed


def test_low_cosine_and_top1_fail():
    verdict = judge(comparison(cosine=0.9, top1_agreement=0.5), Tolerance(min_cosine=0.99, min_top1=0.9), "bf16")
    assert not verdict.passed
    assert len(verdict.failures) == 2


def test_non_finite_output_fails_whatever_the_tolerance():
    verdict = judge(comparison(nonfinite=3), Tolerance(), "fp16")
    assert not verdict.passed
    assert verdict.usage["nonfinite"] == math.inf
