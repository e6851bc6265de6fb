"""Summarize where a run's time went by backend: compile times, quantized loads, and the run's wall time.

Usage: python benchmarks/backend_times.py reports/<run-id>

Reads the run's results files and run.json, so it measures nothing itself: run
``python benchmarks/main_job.py --backends eager,compiled,quantized`` (or ``harness run``)
first. Prints one line per figure.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from harness.report import results_files
from harness.results import load_results


def _seconds(info: dict) -> float | None:
    try:
        started = datetime.datetime.fromisoformat(info["started_at"])
        finished = datetime.datetime.fromisoformat(info["finished_at"])
    except (KeyError, ValueError):
        return None
    return (finished - started).total_seconds()


def main(arguments: list[str]) -> int:
    if len(arguments) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    run_dir = Path(arguments[0])
    results = load_results(results_files(run_dir))
    info = json.loads((run_dir / "run.json").read_text())

    wall = _seconds(info)
    print(f"run wall time: {wall:.0f} s" if wall is not None else "run wall time: unknown")
    print(f"checks: {len(results)} ({results['status'].value_counts().to_dict()})")
    print(f"check time by backend family: {_family_times(results)}")

    compiled = results[results["check"].str.contains("test_compiled_new_length[", regex=False)]
    for _, row in compiled.iterrows():
        metrics = row["metrics"]
        generation = results[
            results["check"].str.contains("test_compiled_generation[", regex=False)
            & (results["case"] == row["case"])
            & (results["backend"] == row["backend"])
        ]
        generate = generation.iloc[0]["metrics"].get("generate_s") if not generation.empty else None
        print(
            f"compile {row['case']} {row['backend']}: first {metrics.get('compile_s', float('nan')):.1f} s, "
            f"new length {metrics.get('recompile_s', float('nan')):.1f} s, "
            f"generation {generate if generate is None else round(generate, 1)} s, "
            f"inductor cache hits {metrics.get('inductor_cache_hits')} misses {metrics.get('inductor_cache_misses')}"
        )
    if not compiled.empty:
        total = sum(
            row["metrics"].get("compile_s", 0.0) + row["metrics"].get("recompile_s", 0.0)
            for _, row in compiled.iterrows()
        )
        print(f"compile total (first forward and new length, generation excluded): {total:.0f} s")
    return 0


def _family_times(results) -> dict[str, float]:
    families = results["metrics"].map(lambda metrics: (metrics or {}).get("backend_family", "?"))
    return {
        family: round(float(seconds), 1) for family, seconds in results.groupby(families)["duration_s"].sum().items()
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
