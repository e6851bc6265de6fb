"""Float16 overflow: every case in fp16, bf16 beside it, module by module, under stress profiles.

Each fp16 and bf16 variant of every backend runs the case's plain input with every
module's range recorded, as built and under each selected stress profile
(``--stress-profiles``, described in ``harness.stress``). The float32 reference runs on
the same edited weights. A variant fails when it turns non-finite where float32 stays
finite, and the message names the first module that did, with the range of its inputs.
An fp16 variant warns (passes, with ``warned`` in its metrics and a note) when its
lowest headroom, 65504 / max |x|, falls below ``--fp16-margin`` (4 by default).

For models that declare keep-in-fp32 modules, the first eager fp16 result of a case also
compares ``from_pretrained(dtype=torch.float16)`` with ``.half()`` of a float32 load, and
warns when fp16 safety depends on the load path.
"""

from __future__ import annotations

import pytest
import torch

from harness.backends import Variant, get_backend
from harness.backends.eager import load_with_settings
from harness.checks import check
from harness.overflow import OverflowRunner, compare_load_paths, judge
from harness.probes.headroom import FP16_MAX
from harness.stress import select_profiles

SUITE = "fp16_overflow"
RUN_BY_DEFAULT = True


@pytest.fixture(scope="session")
def overflow_runner(harness, pytestconfig) -> OverflowRunner:
    """Plans and float32 reference records, kept per case for the whole run."""
    return OverflowRunner(harness, select_profiles(pytestconfig.getoption("stress_profiles")))


@check(variants="all", dtypes=("fp16", "bf16"))
def test_fp16_overflow(harness, case, variant, input_spec, prepared, check, overflow_runner, pytestconfig):
    inputs = harness.inputs(case, input_spec)
    runs = overflow_runner.run(
        case, prepared.module, lambda: prepared.forward(inputs), inputs, input_spec.name, variant.dtype
    )
    margin = pytestconfig.getoption("fp16_margin")
    verdict = judge(runs, variant.dtype, margin)
    check.record(**verdict.metrics, prepare_s=prepared.prepare_seconds)
    check.thresholds = {"fp16_max": FP16_MAX, "headroom_margin": margin if variant.dtype == "fp16" else None}
    check.margin = verdict.margin
    for warning in verdict.warnings:
        check.note(warning)

    failures = [verdict.failure] if verdict.failure else []
    if variant.dtype == "fp16" and get_backend(variant.backend).family == "eager":
        failures += _compare_load_paths(harness, case, variant, input_spec, prepared, check, overflow_runner, runs)
    if failures:
        check.fail("; ".join(failures))


def _compare_load_paths(harness, case, variant, input_spec, prepared, check, overflow_runner, runs) -> list[str]:
    """Compare from_pretrained(dtype=float16) with .half() once per case; return the failures.

    The load path does not depend on the attention or experts kernels, so only the first
    eager fp16 variant of a case compares it (eager attention when it is selected).
    """
    if not overflow_runner.claim_load_path(case):
        return []
    inputs = harness.inputs(case, input_spec)
    comparison = compare_load_paths(
        overflow_runner,
        case,
        prepared.module,
        runs,
        lambda: load_with_settings(harness.built(case), torch.float32, harness.device, **_load_kwargs(variant)),
        inputs,
        input_spec.name,
        harness.device,
    )
    if comparison is None:
        return []

    check.record(load_path=comparison.metrics(runs))
    if comparison.warning:
        check.note(comparison.warning)
        check.record(warned=True, warnings=[*check.metrics["warnings"], "load-path"])
    return [comparison.failure] if comparison.failure else []


def _load_kwargs(variant: Variant) -> dict[str, str]:
    """Return the from_pretrained keyword arguments of an eager variant's settings."""
    kwargs = {"attn_implementation": variant.setting("attn", "eager")}
    if variant.setting("experts") is not None:
        kwargs["experts_implementation"] = variant.setting("experts")
    return kwargs
