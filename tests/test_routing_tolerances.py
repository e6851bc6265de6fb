"""The routing tolerance table: entries, fallback to eager, per-case overrides."""

from __future__ import annotations

import pytest

from harness.routing_tolerances import routing_tolerance
from harness.tolerances import ToleranceTableError


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_every_eager_dtype_has_an_entry_with_a_reason(dtype):
    tolerance = routing_tolerance("eager", dtype, "qwen3-moe-tiny")

    assert tolerance.source == f"table eager/{dtype}"
    assert tolerance.reason
    assert tolerance.tie_rtol > 0
    assert tolerance.weight_atol > 0


def test_lower_precision_allows_wider_ties():
    fp32, fp16, bf16 = (
        routing_tolerance("eager", dtype, "mixtral-tiny").tie_rtol for dtype in ("fp32", "fp16", "bf16")
    )

    assert fp32 < fp16 < bf16


def test_family_without_entries_uses_eager():
    assert (
        routing_tolerance("compiled", "bf16", "mixtral-tiny").tie_rtol
        == routing_tolerance("eager", "bf16", "x").tie_rtol
    )


def test_case_override_names_its_source_and_reason():
    tolerance = routing_tolerance("eager", "bf16", "gemma4-moe-tiny")

    assert tolerance.source == "override gemma4-moe-tiny eager/bf16"
    assert "Gemma 4" in tolerance.reason
    assert tolerance.tie_rtol > routing_tolerance("eager", "bf16", "mixtral-tiny").tie_rtol
    assert tolerance.weight_atol == routing_tolerance("eager", "bf16", "mixtral-tiny").weight_atol


def test_epsilon_grows_with_the_logit_scale():
    epsilon = routing_tolerance("eager", "bf16", "mixtral-tiny").tie_epsilon

    assert epsilon.of(2.0) > epsilon.of(1.0) > 0


def test_unknown_dtype_is_an_error_naming_the_table():
    with pytest.raises(
        ToleranceTableError, match="no routing tolerance for family 'eager' and dtype 'fp8'.*routing_tolerances.toml"
    ):
        routing_tolerance("eager", "fp8", "mixtral-tiny")
