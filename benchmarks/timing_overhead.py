"""Compare the harness's timer with torch.utils.benchmark on the same forward, in the same process.

Usage: python benchmarks/timing_overhead.py [--cases llama-tiny,smollm2-135m] [--rounds 5] [--seconds 1.0] [--threads N]

For each case, one forward of its fp32 eager reference at batch 1 and 64 tokens is timed
by both timers with the same thread count. The harness's median comes from
``harness.timing.measure``, which reads the clock around every call.
``torch.utils.benchmark.Timer.blocked_autorange`` times blocks of calls and reports the
median over blocks of the time per call. Rounds alternate which of the
two goes first, so that drift in the machine's speed falls on both. Prints one line per
round and the median ratio, harness over torch; 1.0 means the harness adds nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from torch.utils.benchmark import Timer

from harness.backends.eager import EagerBackend, reference_variant
from harness.cases import build_case, get_case
from harness.latency import latency_inputs
from harness.timing import TimingPlan, clock_for, measure, summarize

LENGTH = 64


def harness_median(forward, seconds: float) -> float:
    plan = TimingPlan(warmup=2, min_repeats=10, min_seconds=seconds)
    return summarize(measure(forward, clock_for("cpu"), plan)).median


def torch_median(forward, seconds: float) -> float:
    timer = Timer(stmt="forward()", globals={"forward": forward}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=seconds).median


def compare(case_id: str, rounds: int, seconds: float) -> float:
    case = get_case(case_id)
    built = build_case(case)
    prepared = EagerBackend().prepare(built, reference_variant(case), "cpu")
    inputs = latency_inputs(built, LENGTH)

    def forward() -> None:
        prepared.forward(inputs)

    ratios = []
    for round_index in range(rounds):
        if round_index % 2 == 0:
            ours, theirs = harness_median(forward, seconds), torch_median(forward, seconds)
        else:
            theirs, ours = torch_median(forward, seconds), harness_median(forward, seconds)
        ratios.append(ours / theirs)
        figures = f"harness {ours * 1e3:.3f} ms, torch {theirs * 1e3:.3f} ms, ratio {ratios[-1]:.3f}"
        print(f"{case_id} round {round_index}: {figures}")
    ratio = statistics.median(ratios)
    print(f"{case_id}: median ratio harness/torch {ratio:.3f} over {rounds} rounds, {torch.get_num_threads()} threads")
    return ratio


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="llama-tiny,smollm2-135m", help="comma-separated case ids")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum measured seconds per median")
    parser.add_argument("--threads", type=int, help="torch threads for both timers (default: torch's own choice)")
    options = parser.parse_args(arguments)
    if options.threads:
        torch.set_num_threads(options.threads)
    for case_id in options.cases.split(","):
        compare(case_id.strip(), options.rounds, options.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
