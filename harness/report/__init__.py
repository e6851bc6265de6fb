"""The HTML report: one self-contained page per run, figures embedded, every string escaped."""

from __future__ import annotations

import html
import importlib
import logging
import pkgutil
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from harness.baseline import DEFAULT_THRESHOLDS, Comparison, Thresholds, compare_runs
from harness.report.baseline import render_comparison
from harness.report.sections import Section, Table, cross_suite_renderers, section_renderers
from harness.runs import earlier_runs, load_run

__all__ = ["AUTO", "render_report"]

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"
# Modules of this package that are not suite sections.
_INFRASTRUCTURE = {"backends", "baseline", "figures", "sections"}
# Pass as ``baseline`` to compare with the run that started last before this one, if any.
AUTO = "auto"


def _load_sections() -> None:
    """Import every section module of this package; each registers its suite's renderer."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{module.name}")


STATUS_ORDER = ("error", "fail", "xfail", "pass", "skip")


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


def comparison_for(run_dir: Path, baseline: Path | str | None, thresholds: Thresholds) -> Comparison | None:
    """Compare the run with ``baseline`` (a folder, AUTO for the previous run, or None for no comparison)."""
    if baseline is None:
        return None
    history = earlier_runs(run_dir, limit=thresholds.history)
    if baseline == AUTO:
        if not history:
            return None
        baseline_dir, history = history[0], history[1:]
    else:
        baseline_dir = Path(baseline)
        history = [path for path in history if path.resolve() != baseline_dir.resolve()]
    return compare_runs(load_run(run_dir), load_run(baseline_dir), [load_run(path) for path in history], thresholds)


def render_report(
    run_dir: Path,
    output: Path | None = None,
    baseline: Path | str | None = AUTO,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    comparison: Comparison | None = None,
) -> Path:
    """Render ``run_dir``'s results to a self-contained HTML page; return its path.

    ``baseline`` is the run to compare with: a run folder, AUTO (the run that started last
    before this one in the same results folder, when there is one) or None. A comparison
    computed already may be passed instead.
    """
    run = load_run(run_dir)
    results, info = run.results, run.info
    _load_sections()

    sections: list[Section] = []
    if comparison is None:
        comparison = comparison_for(run_dir, baseline, thresholds)
    if comparison is not None:
        sections.append(render_comparison(comparison))
    renderers = [
        (suite, renderer)
        for suite, renderer in section_renderers().items()
        if not results.empty and suite in set(results["suite"])
    ]
    renderers += [(name, renderer) for name, renderer in cross_suite_renderers().items() if not results.empty]
    for suite, renderer in renderers:
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
