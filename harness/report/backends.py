"""A figure that puts backends side by side: cosine similarity and top-1 agreement per case."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# figures chooses matplotlib's Agg backend before pyplot loads, so pyplot comes from there.
from harness.report.figures import plt, to_data_uri


def _worst_per_backend(frame: pd.DataFrame, metric: str, worst: str) -> dict[tuple[str, str], float]:
    """Return each (case, backend)'s worst value of ``metric`` over its variants and inputs."""
    values: dict[tuple[str, str], float] = {}
    for _, row in frame.iterrows():
        value = (row.get("metrics") or {}).get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        key = (row["case"], row["backend"].split(":")[0])
        values[key] = min(values.get(key, value), value) if worst == "min" else max(values.get(key, value), value)
    return values


def backend_comparison_figure(frame: pd.DataFrame) -> str | None:
    """Plot 1 - cosine (log scale) and top-1 agreement per case, one series per backend.

    Each point is the worst over the backend's variants and inputs. Returns None unless at
    least two backends have results to compare.
    """
    judged = frame[frame["status"].isin(["pass", "fail", "xfail"])]
    cosines = _worst_per_backend(judged, "cosine", "min")
    top1 = _worst_per_backend(judged, "top1_agreement", "min")
    backends = sorted({backend for _, backend in cosines})
    if len(backends) < 2:
        return None

    cases = list(dict.fromkeys(case for case, _ in cosines))
    figure, (cosine_axes, top1_axes) = plt.subplots(2, 1, figsize=(max(7.0, 0.6 * len(cases) + 3), 7.0), dpi=100)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(backends), 2)))
    offsets = np.linspace(-0.3, 0.3, num=len(backends))
    for offset, colour, backend in zip(offsets, colours, backends, strict=True):
        xs = [cases.index(case) + offset for case in cases if (case, backend) in cosines]
        ys = [max(1.0 - cosines[(case, backend)], 1e-12) for case in cases if (case, backend) in cosines]
        cosine_axes.scatter(xs, ys, s=16, color=colour, label=backend)
        xs = [cases.index(case) + offset for case in cases if (case, backend) in top1]
        ys = [top1[(case, backend)] for case in cases if (case, backend) in top1]
        top1_axes.scatter(xs, ys, s=16, color=colour)
    cosine_axes.set_yscale("log")
    cosine_axes.set_ylabel("1 - cosine (lower is closer)")
    cosine_axes.set_title("Worst cosine similarity and top-1 agreement with the fp32 reference, per backend")
    cosine_axes.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top1_axes.set_ylabel("top-1 agreement")
    top1_axes.set_ylim(-0.02, 1.02)
    for axes in (cosine_axes, top1_axes):
        axes.set_xticks(range(len(cases)), cases, rotation=45, ha="right", fontsize=8)
    return to_data_uri(figure)
