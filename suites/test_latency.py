"""Latency: prefill, time to first token, decode speed and memory of every variant, against eager fp32.

Each check times its variant at batch size 1: prefill at a few sequence lengths, and for
language models the time to first token and the per-token decode step of a greedy
generation. A variant other than the live reference runs interleaved with it, round by
round, and every measurement gets a speedup (the reference's median over the variant's)
with a bootstrap confidence interval. Preparation (loading, compiling, quantizing) is
timed by the backend and reported apart. A variant fails only where the latency table
sets a minimum speedup for its family and dtype.
"""

from __future__ import annotations

import torch

from harness.backends import get_backend
from harness.checks import check
from harness.comparison_tolerances import judge_latency, latency_tolerance_for
from harness.latency import (
    generates,
    latency_inputs,
    measure_profile,
    prefill_lengths,
    profile_metrics,
    time_greedy_generation,
)
from harness.memory import peak_memory, weight_bytes
from harness.timing import clock_for

SUITE = "latency"
RUN_BY_DEFAULT = True
# Without --suites, the run times a tiny model and the checkpoint, in fp32 and bf16;
# naming the suite (--suites latency) times every selected case and variant.
DEFAULT_RUN_CASES = "llama-tiny,smollm2-135m"
DEFAULT_RUN_BACKENDS = "eager:fp32:eager,eager:bf16:sdpa"


@check(variants="all")
def test_latency(harness, case, variant, input_spec, prepared, check):
    built = harness.built(case)
    clock = clock_for(prepared.device)
    reference_variant = harness.reference_variant(case)
    baseline = None if variant == reference_variant else harness.prepared(case, reference_variant)

    longest = latency_inputs(built, max(prefill_lengths(built)))
    prompt = latency_inputs(built, min(prefill_lengths(built)))

    def workload() -> None:
        prepared.forward(longest)
        if generates(case):
            time_greedy_generation(prepared, prompt, clock)

    # One run first, so that one-time work (lazy initialization, a compile for a new
    # shape) does not count as the workload's memory.
    workload()
    memory = peak_memory(workload, prepared.device)
    profile = measure_profile(prepared, built, clock, baseline)

    compile_info = prepared.info.get("compile", {})
    check.record(
        **profile_metrics(profile),
        baseline=None if baseline is None else reference_variant.id,
        prepare_s=prepared.prepare_seconds,
        compile_s=compile_info.get("compile_s"),
        weight_bytes=weight_bytes(prepared.module),
        peak_memory_bytes=memory.bytes,
        peak_memory_kind=memory.kind,
        prefill_lengths=prefill_lengths(built),
        threads=torch.get_num_threads(),
    )
    headline = profile.measurements[profile.headline].speedup()
    if headline is None:
        return
    check.record(speedup=headline.ratio, speedup_low=headline.low, speedup_high=headline.high)

    tolerance = latency_tolerance_for(variant, get_backend(variant.backend).family)
    if tolerance is not None:
        verdict = judge_latency(headline, tolerance, reference_variant.id)
        check.thresholds = tolerance.as_dict()
        check.margin = verdict.margin
        if not verdict.passed:
            check.fail(f"{profile.headline}: {verdict.message}")
    check.note(f"{profile.headline}: {headline.describe()} against {reference_variant.id}")
