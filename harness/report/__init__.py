"""The HTML report: one self-contained page per run, figures embedded, every string escaped."""

from __future__ import annotations

import glob
import html
import importlib
import logging
import pkgutil
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from harness.report.sections import Section, Table, section_renderers
from harness.results import RESULTS_FILE, load_results, read_run_info

__all__ = ["render_report", "results_files"]

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"
# Modules of this package that are not suite sections.
_INFRASTRUCTURE = {"figures", "sections"}


def _load_sections() -> None:
    """Import every section module of this package; each registers its suite's renderer."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{module.name}")


STATUS_ORDER = ("error", "fail", "xfail", "pass", "skip")


def results_files(run_dir: Path) -> list[Path]:
    """Return the run's results files: the main one and any written by pytest-xdist workers."""
    names = sorted(glob.glob(str(run_dir / "results*.jsonl")))
    return [Path(name) for name in names]


def worst_status(statuses: list[str]) -> str:
    for status in STATUS_ORDER:
        if status in statuses:
            return status
    return "skip"


def matrix_column(backend: str, metrics: dict[str, Any]) -> str:
    """Return the matrix column of a variant: its id without the experts implementation.

    MoE cases have three experts implementations per dtype and attention; folding them
    keeps one column per dtype and attention for every case, and the tooltip keeps them apart.
    """
    experts = (metrics or {}).get("experts")
    if experts and backend.endswith(f":{experts}"):
        return backend[: -len(experts) - 1]
    return backend


def summary_matrix(results: pd.DataFrame) -> dict[str, Any]:
    """Build the case x backend matrix: each cell the worst status, with counts and a tooltip."""
    results = results.assign(column=[matrix_column(row.backend, row.metrics) for row in results.itertuples()])
    cases = list(dict.fromkeys(results["case"]))
    backends = sorted(dict.fromkeys(results["column"]))
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for (case, backend), group in results.groupby(["case", "column"], sort=False):
        statuses = list(group["status"])
        counts = {status: statuses.count(status) for status in STATUS_ORDER if status in statuses}
        lines = [f"{row.backend} {row.suite} {row.input}: {row.status}" for row in group.itertuples()]
        cells[(case, backend)] = {
            "status": worst_status(statuses),
            "text": " ".join(f"{count} {status}" for status, count in counts.items()),
            "title": "\n".join(lines),
        }
    return {"cases": cases, "backends": backends, "cells": cells}


def problems_table(results: pd.DataFrame) -> Table:
    frame = results[results["status"].isin(["fail", "error"])]
    rows = [[row.suite, row.case, row.backend, row.input, row.status, row.message] for row in frame.itertuples()]
    return Table(["suite", "case", "backend", "input", "status", "message"], rows)


def _environment_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    environment = info.get("environment", {})
    rows = [(name, str(value)) for name, value in environment.items() if name != "versions"]
    rows += [(name, str(version)) for name, version in environment.get("versions", {}).items()]
    rows += [(f"option {name}", str(value)) for name, value in info.get("options", {}).items()]
    return rows


def render_report(run_dir: Path, output: Path | None = None) -> Path:
    """Render ``run_dir``'s results to a self-contained HTML page; return its path."""
    files = results_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no {RESULTS_FILE} in {run_dir}; run 'harness run' first or pass a run folder")
    results = load_results(files)
    info = read_run_info(run_dir)
    _load_sections()

    sections: list[Section] = []
    for suite, renderer in section_renderers().items():
        if results.empty or suite not in set(results["suite"]):
            continue
        try:
            section = renderer(results, info)
        except Exception as error:  # noqa: BLE001 - one broken section must not cost the whole report
            log.exception("report section %r failed", suite)
            section = Section(title=suite, anchor=suite, summary=f"this section failed to render: {error!r}")
        if section is not None:
            sections.append(section)

    counts = results["status"].value_counts().to_dict() if not results.empty else {}
    template = _environment().get_template("report.html.j2")
    page = template.render(
        run_id=info.get("run_id", run_dir.name),
        info=info,
        counts=[(status, counts.get(status, 0)) for status in ("pass", "fail", "error", "xfail", "skip")],
        total=len(results),
        matrix=summary_matrix(results) if not results.empty else None,
        problems=problems_table(results) if not results.empty else None,
        sections=sections,
        environment=_environment_rows(info),
    )
    path = output or run_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "report/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["escape_title"] = html.escape
    return environment
