"""The MoE routing section: agreement heatmaps, expert load histograms, flips, and every check's outcome."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.report.figures import new_figure, to_data_uri
from harness.report.sections import Figure, Section, Table, format_number, register_section

SUITE = "moe_routing"
# Explained flips listed in the report; unexplained ones are always listed in full.
MAX_EXPLAINED_ROWS = 200
_HISTOGRAM_COLUMNS = 4


def check_function(check_id: str) -> str:
    """Return the suite function of a check id such as ``suites/x.py::test_name[case/variant/input]``."""
    return check_id.split("::", 1)[-1].split("[", 1)[0]


def _of(frame: pd.DataFrame, function: str) -> pd.DataFrame:
    return frame[frame["check"].map(check_function) == function]


def _metric(row: pd.Series, name: str, default: Any = None) -> Any:
    metrics = row.get("metrics")
    return metrics.get(name, default) if isinstance(metrics, dict) else default


def short_layer(name: str) -> str:
    return name.removeprefix("model.")


def agreement_heatmap(case: str, rows: pd.DataFrame) -> str | None:
    """Plot the fraction of tokens with the reference's expert set, layer x backend, for one case."""
    backends = list(rows["backend"])
    per_backend = [{entry["layer"]: entry for entry in _metric(row, "layers", [])} for _, row in rows.iterrows()]
    layers = list(dict.fromkeys(layer for entries in per_backend for layer in entries))
    if not layers or not backends:
        return None
    values = np.full((len(layers), len(backends)), np.nan)
    unexplained = np.zeros_like(values)
    for column, entries in enumerate(per_backend):
        for row, layer in enumerate(layers):
            if layer in entries:
                values[row, column] = entries[layer]["identical_fraction"]
                unexplained[row, column] = entries[layer]["unexplained_flips"]

    figure, axes = new_figure(width=max(5.0, 0.9 * len(backends) + 3), height=max(2.5, 0.4 * len(layers) + 2))
    lowest = float(np.nanmin(values)) if np.isfinite(values).any() else 1.0
    image = axes.imshow(values, cmap="RdYlGn", vmin=min(0.9, lowest), vmax=1.0, aspect="auto")
    for row in range(len(layers)):
        for column in range(len(backends)):
            if math.isnan(values[row, column]):
                continue
            text = f"{values[row, column]:.3f}"
            if unexplained[row, column]:
                text += f"\n{int(unexplained[row, column])} unexpl."
            axes.text(column, row, text, ha="center", va="center", fontsize=7)
    axes.set_xticks(range(len(backends)), backends, rotation=45, ha="right", fontsize=7)
    axes.set_yticks(range(len(layers)), [short_layer(layer) for layer in layers], fontsize=7)
    axes.set_title(f"{case}: fraction of tokens routed to the reference's experts")
    figure.colorbar(image, ax=axes, fraction=0.04)
    return to_data_uri(figure)


def load_histograms(case: str, loads: list[dict[str, Any]]) -> str | None:
    """Plot each layer's expert load (token assignments per expert) for one case, one panel per layer."""
    if not loads:
        return None
    columns = min(_HISTOGRAM_COLUMNS, len(loads))
    rows = math.ceil(len(loads) / columns)
    figure, _ = new_figure(width=3.0 * columns + 1, height=2.2 * rows + 0.6)
    figure.clear()
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for position, load in enumerate(loads):
        axes = axes_grid[position // columns][position % columns]
        histogram = load["histogram"]
        dead = set(load["dead_experts"])
        colours = ["#c62828" if expert in dead else "#1565c0" for expert in range(len(histogram))]
        axes.bar(range(len(histogram)), histogram, color=colours)
        axes.axhline(sum(histogram) / len(histogram), color="#616161", linewidth=0.8, linestyle="--")
        axes.set_title(f"{short_layer(load['layer'])} (CV {load['coefficient_of_variation']:.2f})", fontsize=8)
        axes.tick_params(labelsize=6)
    for position in range(len(loads), rows * columns):
        axes_grid[position // columns][position % columns].axis("off")
    figure.suptitle(f"{case}: expert load on the reference (dashed: mean; red: dead experts)", fontsize=9)
    return to_data_uri(figure)


_FLIP_COLUMNS = ["case", "backend", "layer", "row", "position", "reference experts", "experts", "margin", "epsilon"]


def _flip_rows(frame: pd.DataFrame, explained: bool) -> list[list[Any]]:
    rows = []
    for _, row in frame.iterrows():
        for flip in _metric(row, "flips", []):
            if (flip["cause"] != "unexplained") != explained:
                continue
            cells = [
                row["case"],
                row["backend"],
                short_layer(flip["layer"]),
                flip["row"],
                flip["position"],
                str(flip["reference_experts"]),
                str(flip["experts"]),
                format_number(flip["margin"]),
                format_number(flip["epsilon"]),
            ]
            rows.append([*cells, flip["cause"]] if explained else cells)
    return rows


def _agreement_rows(frame: pd.DataFrame) -> list[list[Any]]:
    rows = []
    for _, row in frame.iterrows():
        for entry in _metric(row, "layers", []):
            rows.append(
                [
                    row["case"],
                    row["backend"],
                    short_layer(entry["layer"]),
                    entry["tokens"],
                    format_number(entry["identical_fraction"], digits=4),
                    format_number(entry["mean_jaccard"], digits=4),
                    format_number(entry["weights_max_error"]),
                    format_number(entry["logits_max_error"]),
                    format_number(entry["epsilon"]),
                    entry["near_tie_flips"],
                    entry["downstream_flips"],
                    entry["unexplained_flips"],
                ]
            )
    return rows


def _load_rows(case: str, loads: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            case,
            short_layer(load["layer"]),
            sum(load["histogram"]),
            format_number(load["coefficient_of_variation"]),
            load["max_load"],
            load["min_load"],
            ", ".join(str(expert) for expert in load["dead_experts"]),
        ]
        for load in loads
    ]


def _reference_loads(invariants: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    loads = {}
    for _, row in invariants.iterrows():
        if _metric(row, "is_reference") and _metric(row, "load"):
            loads[row["case"]] = _metric(row, "load")
    return loads


@register_section(SUITE)
def render_moe_routing(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == SUITE]
    if frame.empty:
        return None
    agreement = _of(frame, "test_routing_agreement")
    invariants = _of(frame, "test_router_invariants")
    section = Section(
        title="MoE routing",
        anchor=SUITE,
        summary=(
            "Which experts each token is sent to, per MoE layer, against the fp32 eager reference. A flip is a token "
            "whose expert set differs. It is a near tie when the reference's logit margin across the swap is within "
            "the dtype's epsilon (routing_tolerances.toml); downstream when its row flipped in an earlier layer and "
            "the layer, fed the reference's routing, agrees; otherwise unexplained, which fails the check."
        ),
    )

    for case, rows in agreement.groupby("case", sort=False):
        figure = agreement_heatmap(case, rows)
        if figure:
            section.figures.append(Figure(figure, f"{case}: agreement with the reference, layer x backend."))
    loads = _reference_loads(invariants)
    for case, case_loads in loads.items():
        figure = load_histograms(case, case_loads)
        if figure:
            section.figures.append(Figure(figure, f"{case}: (token, expert) assignments per expert and layer."))

    unexplained = _flip_rows(agreement, explained=False)
    section.tables.append(
        Table(
            _FLIP_COLUMNS,
            unexplained,
            caption=f"Unexplained flips ({len(unexplained)}): the reference clearly preferred its experts",
            status_column=None,
        )
    )
    explained = _flip_rows(agreement, explained=True)
    shown = explained[:MAX_EXPLAINED_ROWS]
    more = f", first {len(shown)} shown" if len(explained) > len(shown) else ""
    section.tables.append(
        Table([*_FLIP_COLUMNS, "cause"], shown, caption=f"Explained flips ({len(explained)}{more})", status_column=None)
    )
    if not agreement.empty:
        section.tables.append(
            Table(
                [
                    "case",
                    "backend",
                    "layer",
                    "tokens",
                    "same experts",
                    "mean Jaccard",
                    "weights max error",
                    "logits max error",
                    "epsilon",
                    "near ties",
                    "downstream",
                    "unexplained",
                ],
                _agreement_rows(agreement),
                caption="Agreement per layer",
                status_column=None,
            )
        )
    load_rows = [row for case, case_loads in loads.items() for row in _load_rows(case, case_loads)]
    if load_rows:
        section.tables.append(
            Table(
                ["case", "layer", "assignments", "CV", "max", "min", "dead experts"],
                load_rows,
                caption="Expert load on the reference (CV: standard deviation / mean of the per-expert counts)",
                status_column=None,
            )
        )
    section.tables.append(
        Table(
            ["case", "backend", "check", "input", "status", "margin", "message"],
            [
                [
                    row["case"],
                    row["backend"],
                    check_function(row["check"]),
                    row["input"],
                    row["status"],
                    format_number(row.get("margin")),
                    row["message"],
                ]
                for _, row in frame.iterrows()
            ],
            caption="Every routing check",
        )
    )
    return section
