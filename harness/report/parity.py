"""The parity section: metrics and margins per check, and error against tolerance per case and dtype."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.report.backends import backend_comparison_figure
from harness.report.figures import DTYPE_COLOURS, new_figure, to_data_uri
from harness.report.sections import Figure, Section, Table, format_number, register_section

_LIVE = "test_parity["
_GOLDEN = "test_parity_golden["


def _metric(row: pd.Series, name: str) -> Any:
    return row.get("metrics", {}).get(name)


def tolerance_used(row: pd.Series) -> float | None:
    """Return max |x - r| as a fraction of what the tolerance allowed, or None when not judged."""
    thresholds = row.get("thresholds") or {}
    reference_max = _metric(row, "reference_max_abs")
    error = _metric(row, "max_abs_error")
    if error is None or reference_max is None or ("atol" not in thresholds and "rtol" not in thresholds):
        return None
    allowed = thresholds.get("atol", 0.0) + thresholds.get("rtol", 0.0) * reference_max
    return error / allowed if allowed > 0 else math.inf


def _rows(frame: pd.DataFrame) -> list[list[Any]]:
    rows = []
    for _, row in frame.iterrows():
        used = tolerance_used(row)
        rows.append(
            [
                row["case"],
                row["backend"],
                row["input"],
                row["status"],
                format_number(_metric(row, "max_abs_error")),
                format_number(used),
                format_number(_metric(row, "rmse_vs_float64")),
                format_number(_metric(row, "cosine"), digits=7),
                format_number(_metric(row, "top1_agreement")),
                format_number(_metric(row, "kl_divergence")),
                format_number(row.get("margin")),
                _metric(row, "limiting") or "",
                row.get("thresholds", {}).get("source", ""),
                row["message"],
            ]
        )
    return rows


_COLUMNS = [
    "case",
    "backend",
    "input",
    "status",
    "max abs error",
    "tolerance used",
    "RMSE vs fp64",
    "cosine",
    "top-1",
    "KL",
    "margin",
    "limiting",
    "tolerance",
    "message",
]


def error_figure(frame: pd.DataFrame) -> str | None:
    """Plot the fraction of tolerance each live check used, per case, coloured by dtype."""
    points = []
    for _, row in frame.iterrows():
        used = tolerance_used(row)
        if used is not None and row["status"] in ("pass", "fail", "xfail"):
            points.append((row["case"], _metric(row, "dtype") or "?", max(used, 1e-6)))
    if not points:
        return None

    cases = sorted({case for case, _, _ in points})
    dtypes = sorted({dtype for _, dtype, _ in points})
    figure, axes = new_figure(width=max(6.0, 0.55 * len(cases) + 2), height=4.2)
    offsets = np.linspace(-0.25, 0.25, num=len(dtypes)) if len(dtypes) > 1 else [0.0]
    for offset, dtype in zip(offsets, dtypes, strict=True):
        xs = [cases.index(case) + offset for case, point_dtype, _ in points if point_dtype == dtype]
        ys = [used for _, point_dtype, used in points if point_dtype == dtype]
        axes.scatter(xs, ys, s=18, label=dtype, color=DTYPE_COLOURS.get(dtype), alpha=0.8)
    axes.axhline(1.0, color="#c62828", linewidth=1, linestyle="--", label="tolerance")
    axes.set_yscale("log")
    axes.set_xticks(range(len(cases)), cases, rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("max abs error / allowed")
    axes.set_title("Parity error against tolerance (below the dashed line passes)")
    axes.legend(fontsize=8, loc="upper left")
    return to_data_uri(figure)


@register_section("parity")
def render_parity(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "parity"]
    if frame.empty:
        return None
    live = frame[frame["check"].str.contains(_LIVE, regex=False)]
    golden = frame[frame["check"].str.contains(_GOLDEN, regex=False)]

    section = Section(
        title="Parity",
        anchor="parity",
        summary=(
            "Each variant against the live fp32 eager reference (same weights, same inputs), and against "
            "its golden reference file. 'tolerance used' is max |x - r| / (atol + rtol * max |r|); the margin "
            "is 1 minus the largest fraction of any limit used."
        ),
    )
    figure = error_figure(live)
    if figure:
        section.figures.append(Figure(figure, "Fraction of the elementwise tolerance used, per case and dtype."))
    comparison = backend_comparison_figure(live)
    if comparison:
        section.figures.append(Figure(comparison, "Backends side by side: the worst variant of each backend per case."))
    if not live.empty:
        section.tables.append(Table(_COLUMNS, _rows(live), caption="Against the live reference"))
    if not golden.empty:
        section.tables.append(Table(_COLUMNS, _rows(golden), caption="Against golden reference files"))
    return section
