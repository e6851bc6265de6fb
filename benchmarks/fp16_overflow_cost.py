"""Measure what the fp16_overflow suite adds to a run: the same run with and without it, in one invocation.

Usage: python benchmarks/fp16_overflow_cost.py [harness run arguments...]

Runs `harness run --suites parity` and then `harness run --suites parity,fp16_overflow` in
child processes with the same arguments, and prints the wall time and CPU time (user +
system, from getrusage(RUSAGE_CHILDREN)) of each, their difference and their ratio. Both
runs share the model cache, which the first run fills, so the second does not pay for
building. Run it once beforehand to exclude building from both.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time


def timed_run(arguments: list[str]) -> tuple[float, float, int]:
    """Run `harness run` with ``arguments``; return wall seconds, CPU seconds and the exit status."""
    command = [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", *arguments]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, completed.returncode


def main(arguments: list[str]) -> int:
    without_wall, without_cpu, without_status = timed_run(["--suites", "parity", *arguments])
    with_wall, with_cpu, with_status = timed_run(["--suites", "parity,fp16_overflow", *arguments])

    print(f"arguments: {' '.join(arguments) or '(defaults)'}")
    print(f"cpu cores: {os.cpu_count()}")
    print(f"parity only: wall {without_wall:.0f} s, cpu {without_cpu:.0f} s, exit status {without_status}")
    print(f"parity + fp16_overflow: wall {with_wall:.0f} s, cpu {with_cpu:.0f} s, exit status {with_status}")
    print(f"added by fp16_overflow: wall {with_wall - without_wall:.0f} s, cpu {with_cpu - without_cpu:.0f} s")
    print(f"ratio with / without: wall {with_wall / without_wall:.2f}, cpu {with_cpu / without_cpu:.2f}")
    return with_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
