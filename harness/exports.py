"""Exports of a run: CSV or parquet of the results, and a markdown summary.

The markdown summary fits a CI job summary or a pull-request comment: counts per status,
counts per suite, the failing checks with their messages, and the changes since the
baseline when there is one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.baseline import Comparison

SUMMARY_FILE = "summary.md"
CSV_FILE = "results.csv"
_STATUSES = ("pass", "fail", "error", "xfail", "skip")
# Problems listed in the summary; the report has all of them.
_MAX_PROBLEMS = 50


def flat_results(results: pd.DataFrame) -> pd.DataFrame:
    """Return one flat row per check: ids, status, margin, message, and metric.* columns."""
    dropped = [column for column in ("metrics", "thresholds", "environment", "tags") if column in results]
    return results.drop(columns=dropped)


def write_table(results: pd.DataFrame, path: Path, file_format: str) -> Path:
    """Write the flat results as ``csv`` or ``parquet``."""
    flat = flat_results(results)
    if file_format == "csv":
        flat.to_csv(path, index=False)
    elif file_format == "parquet":
        try:
            flat.to_parquet(path, index=False)
        except ImportError as error:
            raise ValueError(f"parquet export needs pyarrow ({error}); install it or use --format csv") from None
    else:
        raise ValueError(f"unknown export format {file_format!r}; use csv, parquet or markdown")
    return path


def _escape_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_summary(results: pd.DataFrame, run_id: str, comparison: Comparison | None = None) -> str:
    counts = results["status"].value_counts().to_dict() if not results.empty else {}
    lines = [f"## Conformance run {run_id}", ""]
    lines.append(" | ".join(f"{counts.get(status, 0)} {status}" for status in _STATUSES))
    lines.append("")

    if not results.empty:
        lines += ["| suite | " + " | ".join(_STATUSES) + " |", "| --- |" + " --- |" * len(_STATUSES)]
        for suite, group in results.groupby("suite"):
            suite_counts = group["status"].value_counts().to_dict()
            lines.append(f"| {suite} | " + " | ".join(str(suite_counts.get(s, 0)) for s in _STATUSES) + " |")
        lines.append("")

    if comparison is not None:
        lines.append(
            f"Against baseline {comparison.baseline_id}: {len(comparison.status_changes)} status changes, "
            f"{len(comparison.regressions)} regressions."
        )
        lines.append("")
        for change in comparison.status_changes[:_MAX_PROBLEMS]:
            lines.append(f"- {change.kind}: `{change.check}` ({change.before} -> {change.after})")
        for regression in comparison.regressions[:_MAX_PROBLEMS]:
            lines.append(f"- regression: `{regression.check}`: {_escape_cell(regression.detail)}")
        lines.append("")

    problems = results[results["status"].isin(["fail", "error"])] if not results.empty else results
    if not problems.empty:
        lines += ["| status | suite | case | backend | input | message |", "| --- | --- | --- | --- | --- | --- |"]
        for row in problems.head(_MAX_PROBLEMS).itertuples():
            message = _escape_cell(row.message)[:300]
            lines.append(f"| {row.status} | {row.suite} | {row.case} | {row.backend} | {row.input} | {message} |")
        if len(problems) > _MAX_PROBLEMS:
            lines.append(f"\n{len(problems) - _MAX_PROBLEMS} more failing checks are in the report.")
    return "\n".join(lines) + "\n"
