"""The accuracy section: scores against the reference per task, and accuracy kept against speed gained."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.report.figures import new_figure, to_data_uri
from harness.report.latency import measured, metric
from harness.report.sections import Figure, Section, Table, format_number, register_section

# Two-sided 95% normal quantile, for the delta's error bars.
_Z95 = 1.96


def _plus_minus(value: Any, error: Any) -> str:
    if value is None:
        return ""
    return f"{format_number(value)} ± {format_number(error)}" if error is not None else format_number(value)


def _row(row: pd.Series) -> list[Any]:
    thresholds = row.get("thresholds") or {}
    trained = metric(row, "weights") == "trained"
    allowed = thresholds.get("max_drop") if trained else thresholds.get("min_agreement")
    return [
        row["case"],
        row["backend"],
        metric(row, "task") or row["input"],
        row["status"],
        metric(row, "weights") or "",
        metric(row, "items"),
        _plus_minus(metric(row, "score"), metric(row, "score_stderr")),
        format_number(metric(row, "reference_score")),
        _plus_minus(metric(row, "delta"), metric(row, "delta_stderr")),
        format_number(metric(row, "agreement")),
        f"{metric(row, 'items_worse')} / {metric(row, 'items_better')}"
        if metric(row, "items_worse") is not None
        else "",
        format_number(metric(row, "p_value")),
        f"{'max drop' if trained else 'min agreement'} {format_number(allowed)}" if allowed is not None else "",
        format_number(row.get("margin")),
        thresholds.get("source", ""),
        row["message"],
    ]


_COLUMNS = [
    "case",
    "backend",
    "task",
    "status",
    "weights",
    "items",
    "score ± SE",
    "reference",
    "delta ± SE",
    "agreement",
    "worse / better",
    "McNemar p",
    "allowed",
    "margin",
    "tolerance",
    "message",
]


def primary_task(frame: pd.DataFrame) -> str | None:
    """Return the task the scatter plots: the multiple-choice task when there is one, else the first by name."""
    kinds = {metric(row, "task"): metric(row, "kind") for _, row in frame.iterrows() if metric(row, "task")}
    tasks = sorted(kinds)
    multiple_choice = [task for task in tasks if kinds[task] == "multiple_choice"]
    return (multiple_choice or tasks or [None])[0]


def tradeoff_figure(accuracy: pd.DataFrame, latency: pd.DataFrame) -> tuple[str, str] | None:
    """Plot accuracy delta against speedup, one point per (case, backend) measured by both suites."""
    task = primary_task(accuracy)
    speedups = {
        (row["case"], row["backend"]): row
        for _, row in measured(latency).iterrows()
        if metric(row, "speedup") is not None
    }
    points = []
    for _, row in measured(accuracy).iterrows():
        timed = speedups.get((row["case"], row["backend"]))
        if metric(row, "task") != task or timed is None or metric(row, "delta") is None:
            continue
        points.append((row["case"], row["backend"], row, timed))
    if not points:
        return None

    figure, axes = new_figure(width=7.5, height=4.8)
    for case in sorted({case for case, _, _, _ in points}):
        chosen = [(backend, row, timed) for point_case, backend, row, timed in points if point_case == case]
        xs = np.array([metric(timed, "speedup") for _, _, timed in chosen])
        lows = np.array([metric(timed, "speedup_low") for _, _, timed in chosen])
        highs = np.array([metric(timed, "speedup_high") for _, _, timed in chosen])
        ys = np.array([metric(row, "delta") for _, row, _ in chosen]) * 100
        x_errors = [xs - lows, highs - xs]
        y_errors = np.array([(metric(row, "delta_stderr") or 0.0) * _Z95 for _, row, _ in chosen]) * 100
        axes.errorbar(xs, ys, xerr=x_errors, yerr=y_errors, fmt="o", capsize=3, label=case, alpha=0.85)
        for (backend, _, _), x, y in zip(chosen, xs, ys, strict=True):
            axes.annotate(backend, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axes.axhline(0.0, color="black", linewidth=1, linestyle="--")
    axes.axvline(1.0, color="black", linewidth=1, linestyle="--")
    axes.set_xscale("log")
    axes.set_xlabel("speedup over eager fp32 (headline latency)")
    axes.set_ylabel(f"accuracy delta on {task} (points)")
    axes.set_title("Accuracy kept against speed gained (up and right is better)")
    axes.legend(fontsize=8)
    return to_data_uri(figure), task


@register_section("accuracy")
def render_accuracy(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "accuracy"]
    if frame.empty:
        return None
    section = Section(
        title="Accuracy",
        anchor="accuracy",
        summary=(
            "Each variant evaluated with lm-eval on the same items as the eager fp32 reference. Trained "
            "checkpoints are judged by the accuracy drop: a drop beyond the allowed one fails when McNemar's "
            "paired test on per-item outcomes is significant, and passes with a note otherwise. Random-weight "
            "tiny cases score at chance, so they are judged by agreement: the fraction of items answered as "
            "the reference answered them. 'worse / better' counts items the variant lost and gained."
        ),
    )
    latency = results[results["suite"] == "latency"]
    tradeoff = tradeoff_figure(frame, latency) if not latency.empty else None
    if tradeoff:
        uri, task = tradeoff
        section.figures.append(
            Figure(uri, f"Accuracy delta on {task} (95% error bars) against headline speedup, one point per backend.")
        )
    section.tables.append(Table(_COLUMNS, [_row(row) for _, row in frame.iterrows()], caption="Per task"))
    return section
