"""Measure the consistency suite: wall and CPU time of `harness run --suites consistency`, per probe.

Usage: python benchmarks/consistency_suite.py [harness run arguments...]
       (default arguments: --cases tag:decoder)

Prints the child's wall time and CPU time (user + system, from getrusage(RUSAGE_CHILDREN)),
then the summed check durations per probe from the run's results. A check's duration
includes preparing its variant when it is the variant's first check, a cost that a run of
every suite pays once whichever suite comes first.
"""

from __future__ import annotations

import collections
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_ARGUMENTS = ["--cases", "tag:decoder"]


def main(arguments: list[str]) -> int:
    run_id = f"consistency-benchmark-{int(time.time())}"
    out = Path("reports")
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--device",
        "cpu",
        "--suites",
        "consistency",
        "--out",
        str(out),
        "--run-id",
        run_id,
        *(arguments or DEFAULT_ARGUMENTS),
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)

    print(f"command: {' '.join(command[2:])}")
    print(f"exit status: {completed.returncode}")
    print(f"wall time: {wall:.0f} s")
    print(f"cpu time: {usage.ru_utime + usage.ru_stime:.0f} s")
    print(f"cpu cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

    results = out / run_id / "results.jsonl"
    if not results.exists():
        print(f"no results in {results.parent}; the run wrote none")
        return completed.returncode or 1
    durations: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for line in results.read_text().splitlines():
        result = json.loads(line)
        match = re.search(r"::(\w+)\[", result["check"])
        probe = match.group(1) if match else result["check"]
        durations[probe] += result["duration_s"]
        counts[probe] += 1
    for probe, seconds in durations.most_common():
        print(f"{probe}: {counts[probe]} checks, {seconds:.0f} s")
    print(f"all checks: {sum(counts.values())}, {sum(durations.values()):.0f} s")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
