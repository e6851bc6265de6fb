"""The latency suite end to end: figures per check, speedups with intervals, a planted slowdown caught."""

from __future__ import annotations

import pytest
import torch

from harness.backends import register_backend, unregister_backend
from tests.planted_comparisons import SleepyBackend

LATENCY = ("test_latency.py",)


@pytest.fixture
def one_thread():
    """Run torch on one thread for the test.

    On a machine whose cores other processes keep busy, a multi-threaded op waits at a
    barrier for a descheduled thread. That can make a 1 ms forward take 100 ms and bury
    the planted 5 ms, and one thread never waits for another.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sleepy_backend(request):
    backend = SleepyBackend(seconds=request.param)
    register_backend(backend)
    yield backend
    unregister_backend(backend.name)


def run_sleepy(run_suites):
    return run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "eager:fp32:eager,sleepy:fp32:eager",
        "--suites",
        "latency",
        suites=LATENCY,
    )


def test_latency_records_prefill_decode_and_memory(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32:eager", "--suites", "latency", suites=LATENCY)
    metrics = run.result(backend="eager:fp32:eager")["metrics"]

    assert metrics["prefill_lengths"] == [16, 64, 128]
    for name in ("prefill_16", "prefill_64", "prefill_128", "ttft", "decode"):
        assert metrics[f"{name}_median_ms"] > 0
        assert metrics[f"{name}_p99_ms"] >= metrics[f"{name}_median_ms"]
        assert metrics[f"{name}_repeats"] >= 10
    assert metrics["tokens_per_s"] > 0
    assert metrics["headline"] == "decode"
    assert metrics["weight_bytes"] > 0
    assert metrics["peak_memory_kind"] == "resident set growth"
    assert metrics["prepare_s"] > 0
    assert metrics["threads"] == torch.get_num_threads()
    # The reference is the baseline itself, so it has no speedup.
    assert "speedup" not in metrics


@pytest.mark.parametrize("sleepy_backend", [0.005], indirect=True)
def test_planted_sleep_is_significantly_slower(run_suites, sleepy_backend, one_thread):
    result = run_sleepy(run_suites).result(backend="sleepy:fp32:eager")
    metrics = result["metrics"]

    assert metrics["speedup_high"] < 1.0
    assert metrics["speedup_low"] <= metrics["speedup"] <= metrics["speedup_high"]
    assert metrics["baseline"] == "eager:fp32:eager"
    assert "decode: speedup " in result["message"]
    assert "slower against eager:fp32:eager" in result["message"]


@pytest.mark.parametrize("sleepy_backend", [0.05], indirect=True)
def test_latency_fails_below_min_speedup(run_suites, sleepy_backend, one_thread):
    result = run_sleepy(run_suites).result(backend="sleepy:fp32:eager")

    assert result["status"] == "fail"
    assert result["message"].startswith("decode: speedup ")
    assert "slower against eager:fp32:eager, below the allowed 0.8" in result["message"]
    assert result["thresholds"]["source"] == "latency eager/fp32"
    assert result["margin"] < 0


def test_default_run_narrows_latency_variants(run_suites):
    run = run_suites("--cases", "llama-tiny", "--co", "-q", suites=LATENCY)

    collected = [line for line in run.stdout.splitlines() if "::test_latency[" in line]
    assert sorted(collected) == [
        "suites/test_latency.py::test_latency[llama-tiny/eager:bf16:sdpa/plain]",
        "suites/test_latency.py::test_latency[llama-tiny/eager:fp32:eager/plain]",
    ]


def test_named_backends_replace_narrowing(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp16:sdpa", "--co", "-q", suites=LATENCY)

    collected = [line for line in run.stdout.splitlines() if "::test_latency[" in line]
    assert collected == ["suites/test_latency.py::test_latency[llama-tiny/eager:fp16:sdpa/plain]"]
