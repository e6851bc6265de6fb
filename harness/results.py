"""The result record, the append-only results file, and loading results into pandas.

A run folder holds ``results.jsonl`` (one JSON object per check, appended and flushed as
each check finishes, so a crash loses at most the check in flight) and ``run.json`` (the
run's environment and options).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Status = Literal["pass", "fail", "xfail", "skip", "error"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "xfail", "skip", "error")

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"


@dataclass
class Result:
    """One check's outcome: suite x case x backend variant x input."""

    run_id: str
    suite: str
    case: str
    backend: str
    check: str
    status: Status
    input: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    message: str = ""
    duration_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    started_at: str = ""

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), sort_keys=True)


def _finite(value: Any) -> Any:
    """Replace NaN and infinity, which JSON cannot hold, with strings that say so."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _restore_floats(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {key: _restore_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore_floats(item) for item in value]
    return value


def new_run_id() -> str:
    """Return a run id: the local time, then 4 random hex digits so parallel runs never collide."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


class ResultsWriter:
    """Append results to a JSONL file, flushing and syncing each record to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def write(self, result: Result) -> None:
        self._handle.write(result.to_json() + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def iter_results(path: Path) -> Iterator[Result]:
    """Yield the results in ``path``, skipping (and logging) lines a crash cut short."""
    known = set(Result.__dataclass_fields__)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = _restore_floats(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d is not a complete JSON record (a check cut short?); skipped", path, number)
                continue
            yield Result(**{key: value for key, value in record.items() if key in known})


def load_results(paths: Path | Iterable[Path]) -> Any:
    """Load results into a pandas DataFrame with one row per check.

    Metrics and thresholds become columns prefixed ``metric.`` and ``threshold.``; the
    original dicts stay in the ``metrics`` and ``thresholds`` columns.
    """
    import pandas as pd

    if isinstance(paths, Path):
        paths = [paths]
    rows = []
    for path in paths:
        for result in iter_results(path):
            row = asdict(result)
            row.update({f"metric.{key}": value for key, value in result.metrics.items() if _is_scalar(value)})
            row.update({f"threshold.{key}": value for key, value in result.thresholds.items() if _is_scalar(value)})
            rows.append(row)
    columns = list(Result.__dataclass_fields__)
    return pd.DataFrame(rows, columns=None if rows else columns)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(_finite(info), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.exists():
        return {}
    try:
        return _restore_floats(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; the report shows no run information", path)
        return {}
