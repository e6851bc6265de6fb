"""Parity: every variant against the live fp32 eager reference, and against its golden reference.

The live check runs each variant on the same weights and inputs as the reference and
judges the output by the tolerance table; on a failure it reruns both with every module
recorded and names the first module whose output left tolerance (see
``harness.probes.localize`` for compiled and quantized variants). The golden check
compares a variant's output with the file ``harness refs update`` wrote, which catches
drift across library versions.
"""

from __future__ import annotations

import pytest

from harness.backends import get_backend
from harness.checks import check
from harness.inputs import PADDED, PLAIN
from harness.probes.compare import compare_outputs, primary_output
from harness.probes.localize import localize_failure
from harness.references import (
    GoldenReferenceMissing,
    describe_drift,
    output_slice,
    read_reference,
)
from harness.tolerances import judge, tolerance_for

SUITE = "parity"
RUN_BY_DEFAULT = True


@check(variants="non-reference", inputs=(PLAIN, PADDED))
def test_parity(harness, case, variant, input_spec, prepared, check):
    reference = harness.reference(case, input_spec)
    inputs = harness.inputs(case, input_spec)
    output = primary_output(prepared.forward(inputs))

    comparison = compare_outputs(
        output,
        reference.output,
        valid=inputs.valid,
        float64_reference=reference.float64_output,
        vocabulary=reference.vocabulary,
    )
    tolerance = tolerance_for(get_backend(variant.backend).family, variant.dtype, case.id, backend=variant.backend)
    verdict = judge(comparison, tolerance, variant.dtype)
    check.record(**comparison.as_metrics(), prepare_s=prepared.prepare_seconds, limiting=verdict.limiting)
    check.thresholds = tolerance.as_dict()
    check.margin = verdict.margin
    for note in reference.notes:
        check.note(note)
    if verdict.passed:
        return

    reference_model = harness.prepared(case, harness.reference_variant(case))
    where = localize_failure(reference_model, prepared, inputs, reference.output, tolerance)
    check.record(**where.metrics)
    check.fail(f"{'; '.join(verdict.failures)}; {where.text}")


@check(variants="all", inputs=(PLAIN,))
def test_parity_golden(harness, case, variant, input_spec, prepared, check):
    try:
        golden = read_reference(harness.options.references_dir, case, variant)
    except GoldenReferenceMissing as missing:
        pytest.skip(str(missing))

    output = primary_output(prepared.forward(harness.inputs(case, input_spec)))
    current = output_slice(output)
    if tuple(current.shape) != tuple(golden.slice.shape):
        check.fail(f"output slice shape {tuple(current.shape)} differs from golden {tuple(golden.slice.shape)}")

    comparison = compare_outputs(current, golden.slice)
    tolerance = tolerance_for(get_backend(variant.backend).family, variant.dtype, case.id, backend=variant.backend)
    verdict = judge(comparison, tolerance, variant.dtype)
    check.record(**comparison.as_metrics(), limiting=verdict.limiting, golden=str(golden.path))
    check.thresholds = tolerance.as_dict()
    check.margin = verdict.margin
    if comparison.max_abs_error > 0:
        check.note(describe_drift(golden, harness.environment["versions"]))
    if not verdict.passed:
        check.fail(f"drift from golden reference: {'; '.join(verdict.failures)}")
