"""Timers, repeat loops and the statistics of timings.

A :class:`Clock` times one call: CUDA events around the call on a CUDA device (so the
figure is GPU time, not launch time), ``time.perf_counter`` on a CPU. A
:class:`TimingPlan` sets how long to measure: warm-up runs that are thrown away, then
repeats until both a minimum count and a minimum wall time are reached.

Comparisons interleave the two sides (baseline, candidate, baseline, candidate, ...), so
that drift in the machine's speed (frequency scaling, other processes) falls on both
alike. The speedup is the ratio of the medians, with a bootstrap confidence interval
that resamples the (baseline, candidate) pairs together.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

# Named durations in seconds that one repeat of a measurement returns, such as
# {"ttft": 0.012, "decode": 0.004}.
Durations = Mapping[str, float]


@dataclass(frozen=True)
class TimingPlan:
    """How long to measure: ``warmup`` discarded runs, then at least ``min_repeats`` and ``min_seconds``."""

    warmup: int = 2
    min_repeats: int = 10
    min_seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_repeats < 1 or self.min_seconds < 0:
            raise ValueError(f"invalid timing plan {self}: warmup must be >= 0, min_repeats >= 1 and min_seconds >= 0")


class Clock(Protocol):
    def time(self, function: Callable[[], Any]) -> tuple[Any, float]:
        """Run ``function``; return its result and its duration in seconds."""


class PerfCounterClock:
    """Wall time of a call on the CPU."""

    def time(self, function: Callable[[], Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        result = function()
        return result, time.perf_counter() - started


class CudaEventClock:
    """GPU time of a call: CUDA events recorded before and after it, then a synchronize."""

    def time(self, function: Callable[[], Any]) -> tuple[Any, float]:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        result = function()
        end.record()
        end.synchronize()
        return result, start.elapsed_time(end) / 1000.0


def clock_for(device: str) -> Clock:
    """Return the clock that times calls on ``device`` ("cpu" or "cuda")."""
    if device.startswith("cuda"):
        return CudaEventClock()
    return PerfCounterClock()


def collect(repeat: Callable[[], Durations], plan: TimingPlan) -> dict[str, np.ndarray]:
    """Run ``repeat`` as the plan sets out; return each named duration's samples in seconds."""
    for _ in range(plan.warmup):
        repeat()

    samples: dict[str, list[float]] = {}
    started = time.perf_counter()
    count = 0
    while count < plan.min_repeats or time.perf_counter() - started < plan.min_seconds:
        for name, seconds in repeat().items():
            samples.setdefault(name, []).append(seconds)
        count += 1
    return {name: np.asarray(values, dtype=np.float64) for name, values in samples.items()}


def collect_interleaved(
    baseline: Callable[[], Durations], candidate: Callable[[], Durations], plan: TimingPlan
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Alternate baseline and candidate repeats; return both sides' samples, pair i from round i."""

    def both() -> dict[str, float]:
        paired = {f"baseline/{name}": seconds for name, seconds in baseline().items()}
        paired.update({f"candidate/{name}": seconds for name, seconds in candidate().items()})
        return paired

    samples = collect(both, plan)
    baseline_samples = {
        name.removeprefix("baseline/"): v for name, v in samples.items() if name.startswith("baseline/")
    }
    candidate_samples = {
        name.removeprefix("candidate/"): v for name, v in samples.items() if name.startswith("candidate/")
    }
    return baseline_samples, candidate_samples


def measure(function: Callable[[], Any], clock: Clock, plan: TimingPlan) -> np.ndarray:
    """Time ``function`` as the plan sets out; return the samples in seconds."""
    return collect(lambda: {"call": clock.time(function)[1]}, plan)["call"]


@dataclass(frozen=True)
class TimingSummary:
    """Order statistics of one measurement's samples, in seconds; ``cv`` is standard deviation over mean.

    With few samples the high percentiles are close to the maximum: p99 of 10 samples is
    an interpolation between the two slowest.
    """

    count: int
    median: float
    p90: float
    p99: float
    mean: float
    cv: float
    minimum: float
    maximum: float
    median_low: float
    median_high: float

    def as_metrics(self, prefix: str) -> dict[str, float | int]:
        """Return the summary as flat metrics in milliseconds, named ``<prefix>_median_ms`` and so on.

        The median's confidence interval is ``<prefix>_median_ms_ci_low`` and ``_ci_high``:
        the names run comparison looks for to call a slowdown a regression.
        """
        return {
            f"{prefix}_median_ms": self.median * 1e3,
            f"{prefix}_median_ms_ci_low": self.median_low * 1e3,
            f"{prefix}_median_ms_ci_high": self.median_high * 1e3,
            f"{prefix}_p90_ms": self.p90 * 1e3,
            f"{prefix}_p99_ms": self.p99 * 1e3,
            f"{prefix}_min_ms": self.minimum * 1e3,
            f"{prefix}_cv": self.cv,
            f"{prefix}_repeats": self.count,
        }


def summarize(samples: np.ndarray) -> TimingSummary:
    """Summarize samples in seconds; raise ValueError when there are none."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timing samples to summarize; the timing plan needs min_repeats >= 1")
    mean = float(values.mean())
    deviation = float(values.std(ddof=1)) if values.size > 1 else 0.0
    low, high = median_interval(values)
    return TimingSummary(
        count=int(values.size),
        median=float(np.median(values)),
        p90=float(np.percentile(values, 90)),
        p99=float(np.percentile(values, 99)),
        mean=mean,
        cv=deviation / mean if mean > 0 else math.inf,
        minimum=float(values.min()),
        maximum=float(values.max()),
        median_low=low,
        median_high=high,
    )


def median_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Return a distribution-free confidence interval for the median: two order statistics.

    The number of samples below the true median follows Binomial(n, 1/2), so the interval
    from the k-th smallest to the k-th largest sample covers the median with probability
    at least ``confidence`` for the largest such k. Under 6 samples it is [min, max]. Above
    100 samples the binomial is replaced by its normal approximation.
    """
    values = np.sort(np.asarray(samples, dtype=np.float64))
    count = values.size
    tail = (1.0 - confidence) / 2
    if count > 100:
        z = statistics.NormalDist().inv_cdf(1.0 - tail)
        low_index = max(int(math.floor((count - z * math.sqrt(count)) / 2)) - 1, 0)
        return float(values[low_index]), float(values[count - 1 - low_index])
    below = 0.0
    index = 0
    # Count the order statistics k with P(Binomial(n, 1/2) <= k) within one tail.
    while index < count // 2:
        below += math.comb(count, index) / 2.0**count
        if below > tail:
            break
        index += 1
    low_index = max(index - 1, 0)
    return float(values[low_index]), float(values[count - 1 - low_index])


@dataclass(frozen=True)
class Speedup:
    """Baseline median over candidate median (above 1: the candidate is faster), with a confidence interval."""

    ratio: float
    low: float
    high: float
    confidence: float

    @property
    def verdict(self) -> str:
        if self.low > 1.0:
            return "faster"
        if self.high < 1.0:
            return "slower"
        return "no significant difference"

    def describe(self) -> str:
        percent = round(self.confidence * 100)
        return f"speedup {self.ratio:.3g} ({percent}% CI {self.low:.3g} to {self.high:.3g}): {self.verdict}"


def speedup(
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Speedup:
    """Return the ratio of medians, baseline over candidate, with a percentile bootstrap interval.

    Samples of equal length are taken as pairs from interleaved rounds and resampled
    together, so the drift that the pairing cancelled stays out of the interval. Samples
    of different lengths are resampled independently. The seed makes the interval
    reproducible for the same samples.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if baseline.size == 0 or candidate.size == 0:
        raise ValueError("speedup needs samples on both sides; got an empty sample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r} must lie strictly between 0 and 1")

    ratio = float(np.median(baseline) / np.median(candidate))
    generator = np.random.default_rng(seed)
    if baseline.size == candidate.size:
        indices = generator.integers(0, baseline.size, size=(resamples, baseline.size))
        ratios = np.median(baseline[indices], axis=1) / np.median(candidate[indices], axis=1)
    else:
        baseline_indices = generator.integers(0, baseline.size, size=(resamples, baseline.size))
        candidate_indices = generator.integers(0, candidate.size, size=(resamples, candidate.size))
        ratios = np.median(baseline[baseline_indices], axis=1) / np.median(candidate[candidate_indices], axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Speedup(ratio=ratio, low=float(low), high=float(high), confidence=confidence)
