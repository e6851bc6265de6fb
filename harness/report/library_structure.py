"""The library structure section: model types whose default config does not build, and multimodal layout deviations."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.sections import Section, Table, register_section

_DEFAULT_CONFIG = "test_default_config_builds["
_LAYOUT = "test_multimodal_layout["


def _rows(frame: pd.DataFrame) -> list[list[Any]]:
    return [[row.case.removeprefix("auto-"), row.status, row.message] for row in frame.itertuples()]


def _counts(frame: pd.DataFrame) -> str:
    counts = frame["status"].value_counts().to_dict()
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


@register_section("library_structure")
def render_library_structure(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "library_structure"]
    if frame.empty:
        return None
    default_config = frame[frame["check"].str.contains(_DEFAULT_CONFIG, regex=False)]
    layout = frame[frame["check"].str.contains(_LAYOUT, regex=False)]

    section = Section(
        title="Library structure",
        anchor="library-structure",
        summary=(
            f"Default config builds on the meta device: {_counts(default_config) or 'not run'}. "
            f"Vision- and audio-language layout (AutoModel without an LM head, wrapped by the generation class): "
            f"{_counts(layout) or 'not run'}."
        ),
    )
    failing = default_config[default_config["status"].isin(["fail", "error"])]
    if not failing.empty:
        section.tables.append(
            Table(["model type", "status", "message"], _rows(failing), caption="Default configs that do not build")
        )
    deviating = layout[layout["status"].isin(["fail", "error"])]
    if not deviating.empty:
        section.tables.append(
            Table(["model type", "status", "message"], _rows(deviating), caption="Multimodal models off the layout")
        )
    return section
