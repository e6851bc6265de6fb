"""The coverage section: how many model types each suite ran, and why the others did not run.

It reads the results of automatic cases (tag ``automatic``, one per model type) in every
suite. A type *ran* a suite at a dtype when at least one of its checks there passed,
failed or xfailed. Otherwise it counts under the category its skip message names
(``not covered (<category>): ...``), as an error, or as skipped for another reason.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.coverage_categories import AUTOMATIC_TAG, CATEGORIES, not_covered_category
from harness.report.sections import Section, Table, register_section

RAN = "ran"
ERROR = "error"
SKIPPED = "skipped"
_JUDGED = {"pass", "fail", "xfail"}


def automatic_results(results: pd.DataFrame) -> pd.DataFrame:
    if results.empty or "tags" not in results:
        return results.iloc[0:0]
    mask = results["tags"].apply(lambda tags: AUTOMATIC_TAG in (tags or []))
    return results[mask]


def _dtype(metrics: Any) -> str:
    return (metrics or {}).get("dtype", "") if isinstance(metrics, dict) else ""


def case_outcome(group: pd.DataFrame) -> tuple[str, str]:
    """Return (outcome, message) for one case's results in one suite and dtype."""
    statuses = set(group["status"])
    if statuses & _JUDGED:
        return RAN, "fail" if "fail" in statuses else "pass"
    for message in group["message"]:
        category = not_covered_category(message)
        if category:
            return category, message
    if "error" in statuses:
        return ERROR, next(
            message for status, message in zip(group["status"], group["message"], strict=False) if status == "error"
        )
    return SKIPPED, next(iter(group["message"]), "")


def outcomes(results: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (suite, dtype, case) with its outcome and a message explaining it."""
    frame = automatic_results(results)
    columns = ["suite", "dtype", "case", "outcome", "verdict", "message"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(dtype=frame["metrics"].apply(_dtype))
    rows = []
    for (suite, dtype, case), group in frame.groupby(["suite", "dtype", "case"], sort=False):
        outcome, detail = case_outcome(group)
        verdict = detail if outcome == RAN else ""
        rows.append([suite, dtype, case, outcome, verdict, "" if outcome == RAN else detail])
    return pd.DataFrame(rows, columns=columns)


def coverage_table(results: pd.DataFrame) -> pd.DataFrame:
    """Count model types per (suite, dtype): ran, passed, failed, and not run by category."""
    per_case = outcomes(results)
    rows = []
    for (suite, dtype), group in per_case.groupby(["suite", "dtype"], sort=True):
        counts = group["outcome"].value_counts().to_dict()
        if counts.get(SKIPPED, 0) == len(group):
            continue  # nothing ran and nothing was classified: e.g. golden checks without references
        ran = group[group["outcome"] == RAN]
        row = {
            "suite": suite,
            "dtype": dtype,
            "model types": len(group),
            RAN: len(ran),
            "passed": int((ran["verdict"] == "pass").sum()),
            "failed": int((ran["verdict"] == "fail").sum()),
        }
        for category in CATEGORIES:
            row[category] = counts.get(category, 0)
        row[ERROR] = counts.get(ERROR, 0)
        row[SKIPPED] = counts.get(SKIPPED, 0)
        rows.append(row)
    return pd.DataFrame(rows)


def not_covered_rows(per_case: pd.DataFrame) -> list[list[str]]:
    """Return one row per model type that did not run some suite: its first reason and the suites affected."""
    missing = per_case[per_case["outcome"] != RAN]
    rows = []
    for case, group in missing.groupby("case", sort=True):
        first = group.iloc[0]
        suites = ", ".join(sorted({f"{row.suite} {row.dtype}".strip() for row in group.itertuples()}))
        rows.append([case.removeprefix("auto-"), first["outcome"], suites, first["message"]])
    return rows


@register_section("coverage", cross_suite=True)
def render_coverage(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    table = coverage_table(results)
    if table.empty:
        return None
    per_case = outcomes(results)
    headline = "; ".join(
        f"{row[RAN]} of {row['model types']} model types ran {row['suite']}"
        + (f" in {row['dtype']}" if row["dtype"] else "")
        for _, row in table.iterrows()
    )
    section = Section(
        title="Coverage of model types",
        anchor="coverage",
        summary=(
            f"{headline}. Automatic cases are every model type with an AutoModel class, its default config shrunk "
            "and its inputs synthesized from the forward signature. A type that did not run is counted under the "
            "reason its build gave."
        ),
    )
    section.tables.append(
        Table(list(table.columns), table.values.tolist(), caption="Model types per suite and dtype", status_column=None)
    )
    section.tables.append(
        Table(
            ["model type", "reason", "suites", "message"],
            not_covered_rows(per_case),
            caption="Model types that did not run, with the first reason",
            status_column=None,
        )
    )
    return section
