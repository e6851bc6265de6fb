"""Timers, repeat loops, timing statistics and the speedup interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

import harness.timing
from harness.timing import (
    PerfCounterClock,
    Speedup,
    TimingPlan,
    clock_for,
    collect,
    collect_interleaved,
    measure,
    median_interval,
    speedup,
    summarize,
)


class FakeTime:
    """A stand-in for perf_counter whose time only the test advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(harness.timing.time, "perf_counter", clock)
    return clock


def test_plan_rejects_zero_repeats():
    with pytest.raises(ValueError, match="min_repeats >= 1"):
        TimingPlan(min_repeats=0)


def test_collect_discards_warmup_and_stops_at_min_repeats(fake_time):
    calls = []

    def repeat():
        calls.append(len(calls))
        return {"step": float(len(calls))}

    samples = collect(repeat, TimingPlan(warmup=2, min_repeats=5, min_seconds=0.0))

    assert len(calls) == 7
    assert samples["step"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_collect_repeats_until_min_seconds(fake_time):
    def repeat():
        fake_time.now += 0.25
        return {"step": 0.25}

    samples = collect(repeat, TimingPlan(warmup=0, min_repeats=2, min_seconds=1.0))

    assert len(samples["step"]) == 4


def test_collect_interleaved_alternates_baseline_and_candidate(fake_time):
    order = []

    def baseline():
        order.append("A")
        return {"call": 2.0}

    def candidate():
        order.append("B")
        return {"call": 1.0}

    baseline_samples, candidate_samples = collect_interleaved(
        baseline, candidate, TimingPlan(warmup=1, min_repeats=3, min_seconds=0.0)
    )

    assert "".join(order) == "ABABABAB"
    assert baseline_samples["call"].tolist() == [2.0, 2.0, 2.0]
    assert candidate_samples["call"].tolist() == [1.0, 1.0, 1.0]


def test_measure_returns_one_sample_per_repeat():
    samples = measure(lambda: sum(range(100)), PerfCounterClock(), TimingPlan(warmup=1, min_repeats=4, min_seconds=0))

    assert samples.shape == (4,)
    assert (samples >= 0).all()


def test_clock_for_cpu_is_perf_counter():
    assert isinstance(clock_for("cpu"), PerfCounterClock)


def test_summarize_order_statistics():
    summary = summarize(np.arange(1.0, 101.0))

    assert summary.count == 100
    assert summary.median == pytest.approx(50.5)
    assert summary.p90 == pytest.approx(90.1)
    assert summary.p99 == pytest.approx(99.01)
    assert summary.minimum == 1.0
    assert summary.maximum == 100.0
    assert summary.cv == pytest.approx(np.std(np.arange(1.0, 101.0), ddof=1) / 50.5)


def test_summary_metrics_are_milliseconds():
    metrics = summarize(np.array([0.001, 0.002, 0.003])).as_metrics("prefill_16")

    assert metrics["prefill_16_median_ms"] == pytest.approx(2.0)
    assert metrics["prefill_16_repeats"] == 3


def test_summarize_rejects_no_samples():
    with pytest.raises(ValueError, match="no timing samples"):
        summarize(np.array([]))


def test_speedup_is_ratio_of_medians_with_interval():
    generator = np.random.default_rng(1)
    baseline = 0.010 + generator.normal(0, 0.0005, size=50)
    candidate = 0.005 + generator.normal(0, 0.00025, size=50)

    result = speedup(baseline, candidate)

    assert result.ratio == pytest.approx(np.median(baseline) / np.median(candidate))
    assert result.low < result.ratio < result.high
    assert result.low > 1.5
    assert result.verdict == "faster"


def test_speedup_interval_is_reproducible():
    generator = np.random.default_rng(2)
    baseline, candidate = generator.random(20), generator.random(20)

    assert speedup(baseline, candidate) == speedup(baseline, candidate)


def test_speedup_of_identical_distributions_is_undecided():
    generator = np.random.default_rng(3)
    samples = generator.normal(1.0, 0.1, size=(2, 40))

    assert speedup(samples[0], samples[1]).verdict == "no significant difference"


def test_speedup_accepts_unpaired_samples():
    result = speedup(np.full(10, 2.0), np.full(7, 4.0))

    assert result.ratio == 0.5
    assert result.verdict == "slower"


def test_speedup_rejects_empty_side():
    with pytest.raises(ValueError, match="empty sample"):
        speedup(np.array([]), np.array([1.0]))


def test_speedup_description_names_verdict():
    text = Speedup(ratio=0.4, low=0.35, high=0.45, confidence=0.95).describe()

    assert text == "speedup 0.4 (95% CI 0.35 to 0.45): slower"


def test_median_interval_covers_the_median():
    rng = np.random.default_rng(0)
    true_median = math.log(2)
    covered = sum(
        low <= true_median <= high for low, high in (median_interval(rng.exponential(size=30)) for _ in range(1000))
    )

    assert 0.93 <= covered / 1000 <= 0.99


def test_median_interval_of_many_samples_covers_the_median():
    rng = np.random.default_rng(1)
    true_median = math.log(2)
    covered = sum(
        low <= true_median <= high for low, high in (median_interval(rng.exponential(size=2000)) for _ in range(500))
    )

    assert 0.92 <= covered / 500 <= 0.98


def test_median_interval_uses_order_statistics():
    assert median_interval(np.arange(10.0)) == (1.0, 8.0)
    assert median_interval(np.arange(5.0)) == (0.0, 4.0)


def test_summary_metrics_name_the_median_interval():
    metrics = summarize(np.arange(1.0, 11.0) / 1e3).as_metrics("forward")

    assert metrics["forward_median_ms_ci_low"] == 2.0
    assert metrics["forward_median_ms_ci_high"] == 9.0
