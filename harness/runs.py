"""Run folders: find them, order them, load one run's results and environment.

A run folder is ``<results dir>/<run id>/`` holding ``results*.jsonl`` (one file, or one per
pytest-xdist worker) and ``run.json``. Runs are ordered by the time they started.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.results import RESULTS_FILE, load_results, read_run_info


@dataclass
class Run:
    """One run's folder, results and run information."""

    folder: Path
    results: pd.DataFrame
    info: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id", self.folder.name))


def results_files(run_dir: Path) -> list[Path]:
    """Return the run's results files: the main one and any written by pytest-xdist workers."""
    return [Path(name) for name in sorted(glob.glob(str(run_dir / "results*.jsonl")))]


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and bool(results_files(path))


def load_run(run_dir: Path) -> Run:
    files = results_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no {RESULTS_FILE} in {run_dir}; run 'harness run' first or pass a run folder")
    return Run(folder=run_dir, results=load_results(files), info=read_run_info(run_dir))


def _start_key(run_dir: Path) -> tuple[str, str]:
    info = read_run_info(run_dir)
    return (str(info.get("started_at", "")), run_dir.name)


def runs_in(results_dir: Path) -> list[Path]:
    """Return the run folders under ``results_dir``, oldest first."""
    if not results_dir.is_dir():
        return []
    return sorted((path for path in results_dir.iterdir() if is_run_folder(path)), key=_start_key)


def earlier_runs(run_dir: Path, limit: int | None = None) -> list[Path]:
    """Return the runs beside ``run_dir`` that started before it, newest first."""
    siblings = runs_in(run_dir.parent)
    key = _start_key(run_dir)
    earlier = [path for path in siblings if path.resolve() != run_dir.resolve() and _start_key(path) < key]
    earlier.reverse()
    return earlier[:limit] if limit is not None else earlier


def resolve_run(reference: str, results_dir: Path) -> Path:
    """Turn a run folder path or a run id under ``results_dir`` into a run folder."""
    for candidate in (Path(reference), results_dir / reference):
        if is_run_folder(candidate):
            return candidate
    raise FileNotFoundError(f"run {reference!r} not found: neither a run folder nor a run id under {results_dir}")
