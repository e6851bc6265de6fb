"""Split a run's checks into shards, and merge shard runs back into one run.

Shards split by case, never inside a case, so each model is built and prepared on one
shard only. Cases are assigned greedily, heaviest first, to the shard with the least work
so far (the longest-processing-time rule), weighted by recorded durations when given and
by check counts otherwise; ties break by case id, so the split is deterministic.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from harness.results import RESULTS_FILE, ResultsWriter, iter_results, read_run_info, write_run_info
from harness.runs import is_run_folder, load_run, results_files


class ShardError(ValueError):
    """A bad shard specification or an inconsistent merge; the message names the value."""


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (1-based) into (index, count)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ShardError(f"invalid shard {text!r}; use I/N with 1 <= I <= N, for example 2/4") from None
    if not 1 <= index <= count:
        raise ShardError(f"invalid shard {text!r}; use I/N with 1 <= I <= N, for example 2/4")
    return index, count


def load_durations(source: Path) -> dict[str, float]:
    """Read seconds per case from a run folder or a JSON file mapping case ids to seconds."""
    if is_run_folder(source):
        totals: Counter[str] = Counter()
        for path in results_files(source):
            for result in iter_results(path):
                totals[result.case] += result.duration_s
        return dict(totals)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ShardError(
            f"durations {str(source)!r} is neither a run folder nor a JSON file of seconds per case: {error}"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(value, (int, float)) for value in data.values()):
        raise ShardError(f"durations file {str(source)!r} must map case ids to seconds")
    return {str(case): float(seconds) for case, seconds in data.items()}


def assign_cases(check_counts: dict[str, int], count: int, durations: dict[str, float] | None = None) -> dict[str, int]:
    """Map each case to a 1-based shard index, balancing recorded seconds (or check counts)."""
    durations = durations or {}
    known = [seconds for case, seconds in durations.items() if case in check_counts and seconds > 0]
    # A case without a recorded duration weighs its check count times the mean seconds per check.
    per_check = sum(known) / max(sum(check_counts[c] for c in durations if c in check_counts), 1) if known else 1.0

    def weight(case: str) -> float:
        return durations.get(case) or check_counts[case] * per_check

    load = [0.0] * count
    assignment = {}
    for case in sorted(check_counts, key=lambda case: (-weight(case), case)):
        shard = min(range(count), key=lambda index: (load[index], index))
        assignment[case] = shard + 1
        load[shard] += weight(case)
    return assignment


def merge_runs(run_dirs: Iterable[Path], out_dir: Path, run_id: str) -> Path:
    """Combine shard runs into ``out_dir/run_id``; a check present in two shards is an error."""
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ShardError("nothing to merge; pass the shard run folders")
    target = out_dir / run_id
    if target.exists() and any(target.iterdir()):
        raise ShardError(f"merge target {target} already exists and is not empty; choose another --run-id")

    seen: dict[str, Path] = {}
    writer = ResultsWriter(target / RESULTS_FILE)
    try:
        for run_dir in run_dirs:
            load_run(run_dir)  # raises a clear error for a folder without results
            for path in results_files(run_dir):
                for result in iter_results(path):
                    if result.check in seen:
                        raise ShardError(f"check {result.check!r} is in both {seen[result.check]} and {run_dir}")
                    seen[result.check] = run_dir
                    result.run_id = run_id
                    writer.write(result)
    finally:
        writer.close()

    infos = [read_run_info(run_dir) for run_dir in run_dirs]
    merged = dict(infos[0]) if infos else {}
    merged.update(
        run_id=run_id,
        shards=[info.get("run_id", run_dir.name) for info, run_dir in zip(infos, run_dirs, strict=True)],
        started_at=min((info.get("started_at", "") for info in infos), default=""),
        finished_at=max((info.get("finished_at", "") for info in infos), default=""),
        cases=sorted({case for info in infos for case in info.get("cases", [])}),
    )
    write_run_info(target, merged)
    return target
