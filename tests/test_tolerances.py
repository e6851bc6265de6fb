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


def test_backend_entry_wins_over_family():
    tolerance = tolerance_for("quantized", "fp32", "llama-tiny", backend="quantized-intx-int4")

    assert tolerance.source == "table quantized-intx-int4/*"
    assert tolerance.atol is None
    assert tolerance.min_cosine is not None


def test_unknown_backend_of_family_uses_family_entry():
    tolerance = tolerance_for("quantized", "bf16", "llama-tiny", backend="third-party-quantizer")

    assert tolerance.source == "table quantized/*"


def test_family_without_entry_uses_eager():
    tolerance = tolerance_for("compiled", "bf16", "llama-tiny", backend="compiled")

    assert tolerance.source == "table eager/bf16"


def test_override_narrowed_to_families_skips_quantized():
    eager = tolerance_for("eager", "bf16", "gemma4-tiny", backend="eager")
    compiled = tolerance_for("compiled", "bf16", "gemma4-tiny", backend="compiled")
    quantized = tolerance_for("quantized", "bf16", "gemma4-tiny", backend="quantized-int8wo")

    assert eager.source == "override gemma4-tiny eager/bf16"
    assert compiled.source == "override gemma4-tiny compiled/bf16"
    assert quantized.source == "table quantized-int8wo/*"
    assert quantized.rtol is None


def test_override_narrowed_to_backends_names_the_backend():
    tolerance = tolerance_for("quantized", "fp32", "gemma4-moe-tiny", backend="quantized-intx-int4")

    assert tolerance.source == "override gemma4-moe-tiny quantized-intx-int4/fp32"
    assert tolerance.min_top1 < tolerance_for("quantized", "fp32", "llama-tiny", backend="quantized-intx-int4").min_top1


def test_entry_for_several_backends_applies_to_each():
    for backend in ("quantized-int4wo", "quantized-mxfp4", "quantized-nvfp4"):
        assert tolerance_for("quantized", "bf16", "llama-tiny", backend=backend).source == f"table {backend}/*"


def test_every_quantized_entry_judges_without_elementwise_limits():
    from harness.backends import load_backends

    for name, backend in load_backends().items():
        if backend.family != "quantized":
            continue
        tolerance = tolerance_for("quantized", "fp32", "llama-tiny", backend=name)
        assert tolerance.atol is None, name
        assert tolerance.rtol is None, name
        assert tolerance.min_cosine is not None, name
        assert tolerance.reason, name
