"""Measure the main job: wall time and peak resident memory of `harness run` in a child process.

Usage: python benchmarks/main_job.py [harness run arguments...]

Prints one line per figure. The run's own results land under reports/ as usual. Peak
memory is the maximum resident set size of the child, from getrusage(RUSAGE_CHILDREN).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time


def main(arguments: list[str]) -> int:
    command = [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", *arguments]
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    print(f"command: {' '.join(command[2:])}")
    print(f"exit status: {completed.returncode}")
    print(f"wall time: {wall:.0f} s")
    print(f"peak resident memory: {peak_kib / 2**20:.2f} GiB")
    print(f"cpu cores: {os.cpu_count()}")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
