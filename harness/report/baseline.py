"""The report's comparison with a baseline run: what changed, status changes, regressions, trends."""

from __future__ import annotations

from harness.baseline import Comparison
from harness.report.figures import new_figure, to_data_uri
from harness.report.sections import Figure, Section, Table, format_number


def trend_figure(comparison: Comparison) -> str | None:
    """Plot each case's lowest margin across the runs compared, oldest first."""
    trends = comparison.trends
    if trends is None or trends.empty or trends["run"].nunique() < 2:
        return None
    runs = list(dict.fromkeys(trends["run"]))
    figure, axes = new_figure(width=8.0, height=4.0)
    for case, group in trends.groupby("case"):
        positions = [runs.index(run) for run in group["run"]]
        axes.plot(positions, group["min_margin"], marker="o", markersize=3, linewidth=1, label=case)
    axes.axhline(0.0, color="#c62828", linewidth=1, linestyle="--")
    axes.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("lowest margin (below 0 fails)")
    axes.set_title("Lowest margin per case over recent runs")
    if trends["case"].nunique() <= 20:
        axes.legend(fontsize=6, ncol=2, loc="lower left")
    return to_data_uri(figure)


def render_comparison(comparison: Comparison) -> Section:
    summary = (
        f"Run {comparison.run_id} against baseline {comparison.baseline_id}: "
        f"{len(comparison.status_changes)} status changes, {len(comparison.regressions)} metric regressions, "
        f"{comparison.new_checks} new checks, {comparison.removed_checks} checks no longer run."
    )
    section = Section(title="Changes since the baseline", anchor="changes", summary=summary)

    environment_rows = [[name, before, after] for name, before, after in comparison.environment_changes]
    section.tables.append(
        Table(
            ["what changed", "baseline", "this run"],
            environment_rows or [["nothing", "", ""]],
            caption="What changed: library versions, device, driver",
            status_column=None,
        )
    )
    if comparison.status_changes:
        section.tables.append(
            Table(
                ["change", "suite", "case", "backend", "input", "before", "after", "status", "message"],
                [
                    [c.kind, c.suite, c.case, c.backend, c.input, c.before, c.after, c.after, c.message]
                    for c in comparison.status_changes
                ],
                caption="Status changes",
            )
        )
    if comparison.regressions:
        section.tables.append(
            Table(
                ["suite", "case", "backend", "metric", "baseline", "this run", "detail"],
                [
                    [r.suite, r.case, r.backend, r.metric, format_number(r.before), format_number(r.after), r.detail]
                    for r in comparison.regressions
                ],
                caption="Metric regressions beyond noise",
                status_column=None,
            )
        )
    figure = trend_figure(comparison)
    if figure:
        section.figures.append(Figure(figure, "Lowest margin per case over the last runs (oldest first)."))
    return section
