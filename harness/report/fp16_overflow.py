"""The fp16_overflow section: headroom by module per case, the lowest-headroom modules, verdicts, load paths."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.report.figures import new_figure, to_data_uri
from harness.report.sections import Figure, Section, Table, format_number, register_section

# The report renders without torch (the nightly merge job has none), so it reads profile
# names and descriptions from the results rather than importing harness.stress.
BASELINE = "none"

# The height at which a non-finite module is drawn on the log axis, below the float16 limit (headroom 1).
_NONFINITE_FLOOR = 0.25
_PROFILE_COLOURS = {
    BASELINE: "#1565c0",
    "entry-scale": "#2e7d32",
    "keep-in-fp32": "#6a1b9a",
    "gemma4-vision-pooler": "#ef6c00",
}
_OTHER_COLOURS = ("#00838f", "#ad1457", "#5d4037", "#455a64")


def verdict(row: pd.Series) -> str:
    """Return the result's status, or 'warn' for a pass that recorded a warning."""
    if row["status"] == "pass" and (row.get("metrics") or {}).get("warned"):
        return "warn"
    return str(row["status"])


def _metric(row: pd.Series, name: str) -> Any:
    return (row.get("metrics") or {}).get(name)


def _colour(profile: str, profiles: list[str]) -> str:
    if profile in _PROFILE_COLOURS:
        return _PROFILE_COLOURS[profile]
    return _OTHER_COLOURS[profiles.index(profile) % len(_OTHER_COLOURS)]


def worst_by_module(frame: pd.DataFrame, dtype: str) -> dict[str, tuple[list[str], dict[str, float]]]:
    """Return, per profile, the module order and each module's lowest headroom over the variants of ``dtype``."""
    curves: dict[str, tuple[list[str], dict[str, float]]] = {}
    for _, row in frame.iterrows():
        if _metric(row, "dtype") != dtype:
            continue
        for profile, points in (_metric(row, "headroom_by_module") or {}).items():
            order, lowest = curves.setdefault(profile, ([], {}))
            for label, headroom in points:
                if label not in lowest:
                    order.append(label)
                    lowest[label] = headroom
                elif headroom is not None:
                    lowest[label] = headroom if lowest[label] is None else min(lowest[label], headroom)
    return curves


def headroom_figure(case: str, frame: pd.DataFrame, margin: float | None) -> str | None:
    """Plot headroom by module in execution order, one line per profile, fp16 solid and bf16 dashed."""
    fp16 = worst_by_module(frame, "fp16")
    bf16 = worst_by_module(frame, "bf16")
    if not fp16 and not bf16:
        return None

    order: list[str] = []
    for curves in (fp16, bf16):
        for labels, _ in curves.values():
            order.extend(label for label in labels if label not in order)
    position = {label: index for index, label in enumerate(order)}
    profiles = list(dict.fromkeys([*fp16, *bf16]))

    figure, axes = new_figure(width=9.0, height=3.8)
    for dtype, curves, style in (("bf16", bf16, "--"), ("fp16", fp16, "-")):
        for profile, (labels, lowest) in curves.items():
            # Modules without a tensor in the dtype (kept in fp32) are gaps in the line.
            xs = [position[label] for label in labels]
            ys = [math.nan if lowest[label] is None else max(lowest[label], _NONFINITE_FLOOR) for label in labels]
            colour = _colour(profile, profiles)
            alpha = 0.9 if dtype == "fp16" else 0.45
            axes.plot(xs, ys, style, color=colour, linewidth=1.0, alpha=alpha, label=f"{dtype} {profile}")
            broken = [(position[label], _NONFINITE_FLOOR) for label in labels if lowest[label] == 0]
            if broken:
                axes.scatter(*zip(*broken, strict=True), marker="x", color="#c62828", s=30, zorder=3)

    axes.axhline(1.0, color="#c62828", linewidth=1.2, label="fp16 max (65504)")
    if margin:
        axes.axhline(margin, color="#ef6c00", linewidth=1.0, linestyle=":", label=f"{margin:g}x margin")
    _annotate_lowest(axes, fp16, position)
    axes.set_yscale("log")
    axes.set_ylim(bottom=_NONFINITE_FLOOR / 1.5)
    axes.set_xlabel("module, in execution (completion) order")
    axes.set_ylabel("headroom: 65504 / max |x|")
    axes.set_title(f"{case}: fp16 headroom by module (x: non-finite)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_data_uri(figure)


def _annotate_lowest(axes: Any, curves: dict[str, tuple[list[str], dict[str, float]]], position: dict) -> None:
    """Label the module with the lowest fp16 headroom over every profile."""
    points = [(value, label) for _, lowest in curves.values() for label, value in lowest.items() if value is not None]
    if not points:
        return
    headroom, label = min(points, key=lambda point: (point[0], position[point[1]]))
    x = position[label]
    right_half = x > len(position) / 2
    axes.annotate(
        label,
        (x, max(headroom, _NONFINITE_FLOOR)),
        xytext=(-6 if right_half else 6, -12),
        textcoords="offset points",
        ha="right" if right_half else "left",
        fontsize=7,
        color="#424242",
    )


def lowest_modules_table(frame: pd.DataFrame) -> Table:
    """Tabulate each case's three lowest-headroom fp16 modules, over variants and profiles, lowest first."""
    rows = []
    for case, group in frame.groupby("case", sort=False):
        worst: dict[str, tuple[dict[str, Any], str]] = {}
        for _, row in group.iterrows():
            if _metric(row, "dtype") != "fp16":
                continue
            for entry in _metric(row, "lowest_headroom_modules") or []:
                module = entry["module"]
                if module not in worst or entry["headroom"] < worst[module][0]["headroom"]:
                    worst[module] = (entry, row["backend"])
        ranked = sorted(worst.values(), key=lambda item: item[0]["headroom"])[:3]
        rows += [_lowest_row(case, entry, backend) for entry, backend in ranked]
    rows.sort(key=lambda row: row[-1])
    return Table(
        ["case", "backend", "profile", "module", "class", "tensor", "dtype", "max |x|", "headroom"],
        [[*row[:-1], format_number(row[-1])] for row in rows],
        caption="Lowest-headroom fp16 modules across all cases (three per case, worst variant and profile)",
        status_column=None,
    )


def _lowest_row(case: str, entry: dict[str, Any], backend: str) -> list[Any]:
    return [
        case,
        backend,
        entry.get("profile", ""),
        entry["module"] or "(model)",
        entry.get("class", ""),
        entry.get("tensor", ""),
        entry.get("dtype", ""),
        format_number(entry.get("max_abs")),
        entry["headroom"],
    ]


def checks_table(frame: pd.DataFrame) -> Table:
    rows = []
    for _, row in frame.iterrows():
        rows.append(
            [
                row["case"],
                row["backend"],
                verdict(row),
                format_number(_metric(row, "lowest_headroom")),
                _metric(row, "lowest_headroom_module") or "",
                _metric(row, "lowest_headroom_profile") or "",
                _metric(row, "first_nonfinite_module") or "",
                format_number(row.get("margin")),
                row["message"],
            ]
        )
    columns = [
        "case",
        "backend",
        "verdict",
        "lowest headroom",
        "at module",
        "profile",
        "first non-finite module",
        "margin",
        "message",
    ]
    return Table(columns, rows, caption="Every check (warn: passed with a warning)", status_column="verdict")


def profiles_table(frame: pd.DataFrame) -> Table:
    """Tabulate what each profile did to each case, from the plans recorded in the results."""
    rows = []
    for case, group in frame.groupby("case", sort=False):
        plans: dict[str, Any] = {}
        for _, row in group.iterrows():
            for profile, summary in (_metric(row, "profiles") or {}).items():
                plans.setdefault(profile, summary)
        for profile, summary in plans.items():
            if profile == BASELINE:
                continue
            text = summary.get("plan") or f"not applied: {summary.get('reason', '')}"
            rows.append([case, profile, text, summary.get("rationale", "")])
    return Table(
        ["case", "profile", "what it did", "what the profile is for"],
        rows,
        caption="Stress profiles per case",
        status_column=None,
    )


def load_path_table(frame: pd.DataFrame) -> Table | None:
    rows = []
    for _, row in frame.iterrows():
        load_path = _metric(row, "load_path")
        if not load_path:
            continue
        outcomes = "; ".join(
            f"{profile}: from_pretrained {entry['from_pretrained']}, .half() {entry['half']}"
            + (f" at {entry['half_first_nonfinite']}" if entry.get("half_first_nonfinite") else "")
            for profile, entry in load_path.get("profiles", {}).items()
        )
        rows.append(
            [
                row["case"],
                row["backend"],
                ", ".join(load_path.get("declared", [])),
                str(len(load_path.get("kept_in_fp32", []))),
                "yes" if load_path.get("depends") else "no",
                outcomes,
            ]
        )
    if not rows:
        return None
    return Table(
        ["case", "backend", "declared keep-in-fp32", "parameters kept", "depends on load path", "per profile"],
        rows,
        caption="from_pretrained(dtype=torch.float16) against .half() of an fp32 load",
        status_column=None,
    )


def _summary(frame: pd.DataFrame, margin: float | None) -> str:
    verdicts = [verdict(row) for _, row in frame.iterrows()]
    counts = ", ".join(f"{verdicts.count(name)} {name}" for name in ("fail", "warn", "pass", "error", "skip"))
    rationales: dict[str, str] = {}
    for metrics in frame["metrics"]:
        for profile, summary in (metrics or {}).get("profiles", {}).items():
            if profile != BASELINE and summary.get("rationale"):
                rationales.setdefault(profile, summary["rationale"])
    described = " ".join(f"'{name}' {rationale}." for name, rationale in rationales.items())
    margin_text = f"{margin:g}x" if margin else "the margin"
    return (
        f"Every fp16 and bf16 variant, module by module, as built (profile '{BASELINE}') and under stress profiles "
        f"that bring tiny random weights to the magnitudes of large checkpoints, beside the fp32 reference on the "
        f"same edited weights. Headroom is 65504 / max |x| over a module's output (and the input of norms, poolers "
        f"and projections), counting only tensors in the variant's own dtype. fp16 fails when non-finite where fp32 "
        f"is finite and warns below {margin_text}; bf16 is shown for contrast (its headroom is what fp16 would face) "
        f"and fails only when non-finite. {counts}. Profiles: {described}"
    )


@register_section("fp16_overflow")
def render_fp16_overflow(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "fp16_overflow"]
    if frame.empty:
        return None
    margins = [value.get("headroom_margin") for value in frame["thresholds"] if isinstance(value, dict)]
    margin = next((value for value in margins if value), None)

    section = Section(title="fp16 overflow", anchor="fp16_overflow", summary=_summary(frame, margin))
    for case, group in frame.groupby("case", sort=False):
        uri = headroom_figure(str(case), group, margin)
        if uri:
            section.figures.append(
                Figure(uri, f"{case}: lowest headroom per module over the variants of each dtype, per profile.")
            )
    section.tables.append(lowest_modules_table(frame))
    section.tables.append(checks_table(frame))
    section.tables.append(profiles_table(frame))
    load_path = load_path_table(frame)
    if load_path is not None:
        section.tables.append(load_path)
    return section
