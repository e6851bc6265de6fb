"""Quantization: weight integrity and coverage of each quantized variant against the float model.

After a quantized load, every float weight of the live reference (the same checkpoint in
fp32) must be quantized within the scheme's bound, or kept in float on purpose. None may be
missing, zeroed or left at a freshly initialized value. The check records the fraction of
parameters and of bytes quantized per module kind, and states it when an MoE case's fused
experts stayed in float. Output quality is judged by the parity suite (cosine, top-1, KL).
"""

from __future__ import annotations

import pytest

from harness.checks import check
from harness.probes.weights import initializer_std, inspect_weights

SUITE = "quantization"
RUN_BY_DEFAULT = True

# Problems listed in full in a failure message; the rest are counted.
_LISTED_PROBLEMS = 5


@check(families=("quantized",))
def test_weight_integrity(harness, case, variant, input_spec, prepared, check):
    settings = prepared.info.get("quantization")
    if settings is None:
        pytest.skip(f"backend {variant.backend} records no quantization settings")
    reference = harness.prepared(case, harness.reference_variant(case))

    report = inspect_weights(
        reference.module,
        prepared.module,
        label=settings["label"],
        bound=settings["weight_error_bound"],
        dtype=variant.dtype,
        not_converted=settings["modules_not_converted"],
        converts_conv1d=settings["converts_conv1d"],
        initializer_std=initializer_std(reference.module.config),
    )
    coverage = report.coverage()
    totals = report.totals()
    errors = [record.error / record.bound for record in report.records if record.quantized and record.bound]
    check.record(
        **totals,
        coverage={kind: kind_coverage.as_dict() for kind, kind_coverage in coverage.items()},
        weights=len(report.records),
        quantized_weights=sum(record.quantized for record in report.records),
        max_weight_error_used=max(errors, default=0.0),
        problems=[f"{record.name}: {record.problem}" for record in report.problems],
    )
    check.thresholds = {"weight_error_bound": settings["weight_error_bound"], "source": settings["label"]}
    check.margin = 1.0 - max(errors, default=0.0)

    experts = coverage.get("experts")
    if case.is_moe and experts is not None and experts.quantized_fraction < 1.0:
        share = experts.parameters / max(sum(kind.parameters for kind in coverage.values()), 1)
        check.note(
            f"MoE experts stay in float: {experts.parameters - experts.quantized_parameters:,} expert parameters "
            f"({share:.0%} of the model) are fused 3-D tensors that {settings['label']} does not quantize"
        )

    problems = report.problems
    if not problems and totals["quantized_parameter_fraction"] == 0.0:
        check.fail(f"no weight was quantized: {settings['label']} left every parameter in float")
    if problems:
        listed = "; ".join(f"{record.name}: {record.problem}" for record in problems[:_LISTED_PROBLEMS])
        more = f"; and {len(problems) - _LISTED_PROBLEMS} more" if len(problems) > _LISTED_PROBLEMS else ""
        check.fail(f"{len(problems)} of {len(report.records)} weights failed integrity: {listed}{more}")
