"""The consistency section: each probe's results, shrunk counterexamples, and determinism per backend."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from harness.report.sections import Section, Table, format_number, register_section

# Test function -> the probe's name in the report.
PROBES = {
    "test_causality": "causality",
    "test_padding_invariance": "padding",
    "test_batch_invariance": "batch",
    "test_cache_consistency": "cache: prefill + decode",
    "test_generation_with_cache": "generation: cache vs none",
    "test_static_cache": "generation: static vs dynamic",
    "test_assisted_generation": "assisted generation",
    "test_determinism": "determinism",
}
_STATUSES = ("pass", "fail", "error", "skip")


def probe_of(check: str) -> str:
    """Return the probe a check id belongs to (``suites/test_consistency.py::test_causality[...]``)."""
    match = re.search(r"::(\w+)\[", check)
    name = match.group(1) if match else check
    return PROBES.get(name, name)


def _metric(row: pd.Series, name: str) -> Any:
    return (row.get("metrics") or {}).get(name)


def _judged_by(row: pd.Series) -> str:
    thresholds = row.get("thresholds") or {}
    return str(thresholds.get("source", ""))


def summary_table(frame: pd.DataFrame) -> Table:
    rows = []
    for probe in dict.fromkeys(frame["probe"]):
        group = frame[frame["probe"] == probe]
        counts = [int((group["status"] == status).sum()) for status in _STATUSES]
        examples = sum(int(value) for value in (_metric(row, "examples") for _, row in group.iterrows()) if value)
        rows.append([probe, *counts, examples])
    return Table(
        ["probe", *_STATUSES, "examples run"],
        rows,
        caption="Checks per probe and status; examples run counts every drawn example, shrinking included.",
        status_column=None,
    )


def results_table(frame: pd.DataFrame) -> Table:
    rows = []
    for _, row in frame.iterrows():
        example = _metric(row, "counterexample") or _metric(row, "worst_example") or ""
        rows.append(
            [
                row["probe"],
                row["case"],
                row["backend"],
                row["status"],
                format_number(_metric(row, "examples")),
                format_number(_metric(row, "bitwise")),
                format_number(_metric(row, "max_abs_error")),
                format_number(_metric(row, "top1_agreement")),
                format_number(row.get("margin")),
                _judged_by(row),
                example,
                _metric(row, "first_differing_module") or "",
                row["message"],
            ]
        )
    columns = [
        "probe",
        "case",
        "backend",
        "status",
        "examples",
        "bitwise",
        "max abs error",
        "top-1",
        "margin",
        "judged by",
        "counterexample or worst example",
        "first module that differs",
        "message",
    ]
    caption = (
        "One row per check. A passing check shows its worst example (lowest margin); a failing one the "
        "minimal example Hypothesis shrank it to."
    )
    return Table(columns, rows, caption=caption)


def counterexamples_table(frame: pd.DataFrame) -> Table | None:
    failed = frame[frame["status"].isin(["fail", "error"])]
    if failed.empty:
        return None
    rows = [
        [row["probe"], row["case"], row["backend"], row["status"], _metric(row, "counterexample") or "", row["message"]]
        for _, row in failed.iterrows()
    ]
    return Table(
        ["probe", "case", "backend", "status", "minimal example", "message"],
        rows,
        caption="Shrunk counterexamples. The default profile draws the same examples on every run, so rerunning "
        "the check replays each one.",
    )


def determinism_table(frame: pd.DataFrame) -> Table | None:
    """Summarize determinism per backend variant: how many cases ran bitwise and the largest difference."""
    runs = frame[(frame["probe"] == "determinism") & frame["status"].isin(["pass", "fail"])]
    if runs.empty:
        return None
    rows = []
    for backend, group in runs.groupby("backend", sort=True):
        bitwise = sum(1 for _, row in group.iterrows() if _metric(row, "bitwise"))
        errors = [
            value for value in (_metric(row, "max_abs_error") for _, row in group.iterrows()) if value is not None
        ]
        devices = sorted({str(_metric(row, "device")) for _, row in group.iterrows()})
        rows.append(
            [backend, ", ".join(devices), f"{bitwise} of {len(group)}", format_number(max(errors, default=0.0))]
        )
    return Table(
        ["backend", "device", "cases bitwise", "largest difference between runs"],
        rows,
        caption="Repeated runs of the same batch: on CPU in fp32 they must be bitwise equal; elsewhere a "
        "difference within tolerance passes and is shown here.",
        status_column=None,
    )


@register_section("consistency")
def render_consistency(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "consistency"].copy()
    if frame.empty:
        return None
    frame["probe"] = frame["check"].map(probe_of)

    section = Section(
        title="Consistency",
        anchor="consistency",
        summary=(
            "Each variant checked against itself on inputs drawn by Hypothesis: a later token must not change "
            "earlier outputs (causality), a padded row must match the row alone (with position ids derived "
            "from the attention mask), a row must not depend on its batch mates, decoding from a KV cache must "
            "match the full forward, greedy generation must give the same tokens with and without a cache, with "
            "a static cache and with a drafter, and repeated runs must agree. Outputs are judged by the parity "
            "tolerance table (top-1 agreement recorded, not judged) or bitwise where noted."
        ),
    )
    section.tables.append(summary_table(frame))
    counterexamples = counterexamples_table(frame)
    if counterexamples is not None:
        section.tables.append(counterexamples)
    determinism = determinism_table(frame)
    if determinism is not None:
        section.tables.append(determinism)
    section.tables.append(results_table(frame))
    return section
