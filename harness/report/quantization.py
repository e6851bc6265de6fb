"""The quantization section: weight integrity and coverage per case and quantized variant."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.sections import Section, Table, format_number, register_section

# Module kinds shown as columns, in this order; any other kind goes in "other".
_KIND_COLUMNS = ("linear", "lm_head", "experts", "embedding")


def _fraction(value: Any) -> str:
    return "" if value is None else f"{value:.0%}"


def _kind_cell(coverage: dict[str, Any], kind: str) -> str:
    entry = coverage.get(kind)
    if not entry:
        return ""
    return f"{entry['quantized_fraction']:.0%} of {entry['parameters']:,}"


def _other_cell(coverage: dict[str, Any]) -> str:
    parameters = sum(entry["parameters"] for kind, entry in coverage.items() if kind not in _KIND_COLUMNS)
    quantized = sum(entry["quantized_parameters"] for kind, entry in coverage.items() if kind not in _KIND_COLUMNS)
    return f"{quantized / parameters:.0%} of {parameters:,}" if parameters else ""


def _kept_cell(coverage: dict[str, Any]) -> str:
    reasons = []
    for kind, entry in coverage.items():
        reasons += [f"{kind}: {reason}" for reason in entry.get("kept_reasons", [])]
    return "; ".join(reasons)


def coverage_table(frame: pd.DataFrame) -> Table:
    """Build one row per (case, quantized variant): quantized fractions overall and per module kind."""
    rows = []
    for _, row in frame.iterrows():
        metrics = row.get("metrics") or {}
        coverage = metrics.get("coverage") or {}
        rows.append(
            [
                row["case"],
                row["backend"],
                row["status"],
                _fraction(metrics.get("quantized_parameter_fraction")),
                _fraction(metrics.get("quantized_byte_fraction")),
                format_number(metrics.get("size_ratio")),
                *(_kind_cell(coverage, kind) for kind in _KIND_COLUMNS),
                _other_cell(coverage),
                format_number(metrics.get("max_weight_error_used")),
                _kept_cell(coverage),
                row["message"],
            ]
        )
    columns = [
        "case",
        "backend",
        "status",
        "parameters quantized",
        "bytes quantized",
        "size vs float",
        *(f"{kind} quantized" for kind in _KIND_COLUMNS),
        "other quantized",
        "weight error used",
        "kept in float, and why",
        "message",
    ]
    return Table(columns, rows, caption="Quantization coverage and weight integrity")


@register_section("quantization")
def render_quantization(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "quantization"]
    if frame.empty:
        return None
    section = Section(
        title="Quantization",
        anchor="quantization",
        summary=(
            "Every float weight of the fp32 reference, looked up after the quantized load: quantized within the "
            "scheme's bound, kept in float on purpose, or a problem (missing, zeroed, left at a freshly "
            "initialized value, left in float, beyond the bound). 'bytes quantized' is the share of the float "
            "model's bytes that are quantized; 'size vs float' the quantized model's weight bytes, scales "
            "included, over the float model's; 'weight error used' the largest max |dequantized - float| / "
            "max |float| as a fraction of the scheme's bound. MoE experts stored as fused 3-D parameters stay in "
            "float under every CPU scheme, and the experts column says so. Output quality (cosine, top-1, KL) "
            "is in the parity section."
        ),
    )
    judged = frame[frame["status"] != "skip"]
    skipped = frame[frame["status"] == "skip"]
    if not judged.empty:
        section.tables.append(coverage_table(judged))
    if not skipped.empty:
        rows = [[row["case"], row["backend"], row["status"], row["message"]] for _, row in skipped.iterrows()]
        section.tables.append(Table(["case", "backend", "status", "message"], rows, caption="Skipped variants"))
    return section
