"""Latency measurement: sequence lengths, the greedy decode loop, and the metrics of a profile."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.backends import PreparedModel, Variant
from harness.backends.eager import EagerBackend
from harness.cases import build_case, get_case
from harness.latency import (
    LatencyProfile,
    Measurement,
    latency_inputs,
    prefill_lengths,
    profile_metrics,
    time_greedy_generation,
)
from harness.timing import PerfCounterClock


class NoTruthRunner:
    """A runner that raises on truth tests, as torch's compiled OptimizedModule does."""

    def __init__(self, module):
        self.module = module
        self.calls = 0

    def __call__(self, **kwargs):
        self.calls += 1
        return self.module(**kwargs)

    def __len__(self):
        raise TypeError("runner does not support len()")


@pytest.fixture(scope="module")
def built():
    return build_case(get_case("llama-tiny"))


@pytest.fixture(scope="module")
def prepared(built) -> PreparedModel:
    return EagerBackend().prepare(built, Variant("eager", "fp32", (("attn", "sdpa"),)), "cpu")


def test_prefill_lengths_fit_max_positions(built):
    short = replace(built, config=built.config.__class__(**{**built.config.to_dict(), "max_position_embeddings": 64}))

    assert prefill_lengths(built) == [16, 64, 128]
    assert prefill_lengths(short) == [16]


def test_fixed_shape_kinds_take_one_length():
    whisper = build_case(get_case("whisper-tiny"))

    assert prefill_lengths(whisper) == [16]


def test_latency_inputs_are_one_row_of_the_length(built):
    inputs = latency_inputs(built, 64)

    assert tuple(inputs.tensors["input_ids"].shape) == (1, 64)
    assert bool(inputs.tensors["attention_mask"].all())


def test_greedy_generation_times_first_token_and_decode(prepared, built):
    timings = time_greedy_generation(prepared, latency_inputs(built, 16), PerfCounterClock(), new_tokens=4)

    assert set(timings) == {"ttft", "decode"}
    assert timings["ttft"] > 0
    assert timings["decode"] > 0


def test_greedy_generation_calls_the_runner_each_step(prepared, built):
    runner = NoTruthRunner(prepared.module)
    with_runner = replace(prepared, runner=runner)

    time_greedy_generation(with_runner, latency_inputs(built, 16), PerfCounterClock(), new_tokens=4)

    assert runner.calls == 4


def test_prepared_forward_accepts_a_runner_without_truth_value(prepared, built):
    runner = NoTruthRunner(prepared.module)

    replace(prepared, runner=runner).forward(latency_inputs(built, 16))

    assert runner.calls == 1


def test_generation_needs_two_tokens(prepared, built):
    with pytest.raises(ValueError, match="at least 2"):
        time_greedy_generation(prepared, latency_inputs(built, 16), PerfCounterClock(), new_tokens=1)


def test_profile_metrics_have_statistics_speedups_and_throughput():
    profile = LatencyProfile(
        measurements={
            "prefill_16": Measurement(np.full(10, 0.002)),
            "decode": Measurement(np.full(10, 0.004), baseline=np.full(10, 0.008)),
        },
        headline="decode",
    )

    metrics = profile_metrics(profile)

    assert metrics["prefill_16_median_ms"] == pytest.approx(2.0)
    assert "prefill_16_speedup" not in metrics
    assert metrics["decode_speedup"] == pytest.approx(2.0)
    assert metrics["baseline_decode_median_ms"] == pytest.approx(8.0)
    assert metrics["tokens_per_s"] == pytest.approx(250.0)
    assert metrics["headline"] == "decode"
