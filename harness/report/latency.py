"""The latency section: timing statistics per check, speedup bars with their intervals, memory bars."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.report.figures import new_figure, to_data_uri
from harness.report.sections import Figure, Section, Table, format_number, register_section

_MIB = 2**20
# Bar colours by where the interval lies: above 1 (faster), below 1 (slower), or across 1.
_FASTER, _SLOWER, _UNDECIDED = "#2e7d32", "#c62828", "#9e9e9e"


def metric(row: pd.Series, name: str) -> Any:
    return (row.get("metrics") or {}).get(name)


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the rows whose check ran to the end (passed or failed), which carry timings."""
    return frame[frame["status"].isin(["pass", "fail"])]


def _row(row: pd.Series) -> list[Any]:
    headline = metric(row, "headline") or ""
    low, high = metric(row, "speedup_low"), metric(row, "speedup_high")
    interval = f"{format_number(low)} to {format_number(high)}" if low is not None else ""
    weights, peak = metric(row, "weight_bytes"), metric(row, "peak_memory_bytes")
    return [
        row["case"],
        row["backend"],
        row["status"],
        headline,
        format_number(metric(row, f"{headline}_median_ms")),
        format_number(metric(row, f"{headline}_p90_ms")),
        format_number(metric(row, f"{headline}_p99_ms")),
        format_number(metric(row, f"{headline}_cv")),
        format_number(metric(row, "speedup")),
        interval,
        format_number(metric(row, "ttft_median_ms")),
        format_number(metric(row, "tokens_per_s")),
        format_number(metric(row, "prepare_s")),
        format_number(metric(row, "compile_s")),
        format_number(weights / _MIB if weights is not None else None),
        format_number(peak / _MIB if peak is not None else None),
        row["message"],
    ]


_COLUMNS = [
    "case",
    "backend",
    "status",
    "measured",
    "median ms",
    "p90 ms",
    "p99 ms",
    "CV",
    "speedup",
    "95% CI",
    "TTFT ms",
    "tokens/s",
    "prepare s",
    "compile s",
    "weights MiB",
    "peak MiB",
    "message",
]


def _prefill_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Return a table of prefill medians and speedups, one column pair per sequence length."""
    lengths = sorted({length for _, row in frame.iterrows() for length in (metric(row, "prefill_lengths") or [])})
    columns = ["case", "backend", "status"]
    for length in lengths:
        columns += [f"prefill {length} ms", f"speedup {length}"]
    rows = []
    for _, row in frame.iterrows():
        cells = [row["case"], row["backend"], row["status"]]
        for length in lengths:
            cells += [
                format_number(metric(row, f"prefill_{length}_median_ms")),
                format_number(metric(row, f"prefill_{length}_speedup")),
            ]
        rows.append(cells)
    return columns, rows


def speedup_figure(frame: pd.DataFrame) -> str | None:
    """Plot each variant's headline speedup over the reference as a bar, its confidence interval as whiskers."""
    points = [
        (
            f"{row['case']}  {row['backend']}",
            metric(row, "speedup"),
            metric(row, "speedup_low"),
            metric(row, "speedup_high"),
        )
        for _, row in frame.iterrows()
        if metric(row, "speedup") is not None
    ]
    if not points:
        return None
    labels = [label for label, _, _, _ in points]
    ratios = np.array([ratio for _, ratio, _, _ in points])
    below = ratios - np.array([low for _, _, low, _ in points])
    above = np.array([high for _, _, _, high in points]) - ratios

    figure, axes = new_figure(width=8.0, height=max(2.5, 0.35 * len(points) + 1.2))
    colours = []
    for _, _, low, high in points:
        if low > 1:
            colours.append(_FASTER)
        elif high < 1:
            colours.append(_SLOWER)
        else:
            colours.append(_UNDECIDED)
    positions = np.arange(len(points))
    axes.barh(positions, ratios, xerr=[below, above], color=colours, capsize=3, alpha=0.85)
    axes.axvline(1.0, color="black", linewidth=1, linestyle="--")
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("speedup over the eager fp32 reference (median ratio)")
    axes.set_title("Speedup per backend, with 95% bootstrap intervals")
    return to_data_uri(figure)


def memory_figure(frame: pd.DataFrame) -> str | None:
    """Plot weight bytes and peak memory per variant as grouped bars in MiB, one panel per case.

    Cases differ in size by orders of magnitude (a tiny model's weights are under a MiB), so
    each case gets its own axis.
    """
    rows = [row for _, row in frame.iterrows() if metric(row, "weight_bytes") is not None]
    if not rows:
        return None
    cases = list(dict.fromkeys(row["case"] for row in rows))
    kinds = sorted({metric(row, "peak_memory_kind") or "" for row in rows})
    heights = [len([row for row in rows if row["case"] == case]) for case in cases]

    figure, panels = plt.subplots(
        len(cases),
        1,
        figsize=(8.0, 0.45 * sum(heights) + 1.0 * len(cases) + 0.6),
        dpi=100,
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for case, axes in zip(cases, panels[:, 0], strict=True):
        chosen = [row for row in rows if row["case"] == case]
        weights = np.array([metric(row, "weight_bytes") / _MIB for row in chosen])
        peaks = np.array([(metric(row, "peak_memory_bytes") or 0) / _MIB for row in chosen])
        positions = np.arange(len(chosen))
        axes.barh(positions - 0.2, weights, height=0.4, label="weights", color="#1565c0")
        axes.barh(positions + 0.2, peaks, height=0.4, label=f"peak ({', '.join(kinds)})", color="#ef6c00")
        axes.set_yticks(positions, [row["backend"] for row in chosen], fontsize=8)
        axes.invert_yaxis()
        axes.set_title(case, fontsize=9, loc="left")
        axes.set_xlabel("MiB", fontsize=8)
    panels[0, 0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.08), ncol=2, frameon=False)
    return to_data_uri(figure)


@register_section("latency")
def render_latency(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "latency"]
    if frame.empty:
        return None
    done = measured(frame)
    section = Section(
        title="Latency",
        anchor="latency",
        summary=(
            "Batch size 1. 'measured' is the headline quantity: the per-token decode step for language models, "
            "else prefill at the longest sequence length. The speedup is the reference's median over the "
            "variant's, both measured interleaved in the same run; its interval is a 95% bootstrap over the "
            "pairs. On a CPU the peak is resident set growth during one prefill and generation (weights "
            "loaded earlier excluded); on CUDA it is the maximum allocated."
        ),
    )

    speedups = speedup_figure(done)
    if speedups:
        caption = (
            "Headline speedup per variant with its 95% confidence interval: green is significantly faster "
            "than the reference, red significantly slower, grey undecided."
        )
        section.figures.append(Figure(speedups, caption))
    memory = memory_figure(done)
    if memory:
        section.figures.append(Figure(memory, "Weights and peak memory per variant."))

    section.tables.append(Table(_COLUMNS, [_row(row) for _, row in frame.iterrows()], caption="Per check"))
    columns, rows = _prefill_rows(done)
    if rows:
        section.tables.append(Table(columns, rows, caption="Prefill median per sequence length, and its speedup"))
    return section
