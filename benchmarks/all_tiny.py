"""Measure the every-architecture sweep: wall time of `harness run --cases all-tiny`, and its coverage table.

Usage: python benchmarks/all_tiny.py [--workers N] [extra harness run arguments...]

Runs the parity, fp16_overflow and library structure suites (unless --suites is given) on
every automatic case, in bf16 and fp16, with pytest-xdist workers (2 unless given), then
prints the wall time, the model types per minute after collection, and the coverage table
the report shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def main(arguments: list[str]) -> int:
    if "--workers" not in arguments:
        arguments = ["--workers", "2", *arguments]
    if "--suites" not in arguments:
        arguments = ["--suites", "parity,fp16_overflow,library_structure", *arguments]
    run_id = f"all-tiny-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path("reports")
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--device",
        "cpu",
        "--cases",
        "all-tiny",
        "--backends",
        "eager:bf16:eager,eager:fp16:eager",
        "--out",
        str(out),
        "--run-id",
        run_id,
        *arguments,
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    wall = time.perf_counter() - started

    from harness.report.coverage import coverage_table
    from harness.results import load_results
    from harness.runs import results_files

    results = load_results(results_files(out / run_id))
    first = pd.to_datetime(results["started_at"]).min()
    last = pd.to_datetime(results["started_at"]).max()
    minutes = max((last - first).total_seconds(), 1.0) / 60

    print(f"command: {' '.join(command[2:])}")
    print(f"exit status: {completed.returncode}")
    print(f"wall time: {wall / 60:.1f} min")
    print(f"model types per minute after collection: {results['case'].nunique() / minutes:.1f}")
    print(f"cpu cores: {os.cpu_count()}")
    print(coverage_table(results).to_string(index=False))
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
