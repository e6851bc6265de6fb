"""Report sections: each suite contributes one, registered by suite name.

A section renderer takes the run's results (a DataFrame with every suite's rows) and
returns a :class:`Section`, whose tables and figures the page template lays out. Every
value is escaped by the template; renderers pass plain strings and numbers, never HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Table:
    """A table of plain values; ``status_column`` names the column coloured by status."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    status_column: str | None = "status"


@dataclass
class Figure:
    data_uri: str
    caption: str


@dataclass
class Section:
    title: str
    anchor: str
    summary: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


SectionRenderer = Callable[[pd.DataFrame, dict[str, Any]], Section | None]
_RENDERERS: dict[str, SectionRenderer] = {}
# Sections that read every suite's results; they are called for any run and may return None.
_CROSS_SUITE: dict[str, SectionRenderer] = {}


def register_section(suite: str, *, cross_suite: bool = False) -> Callable[[SectionRenderer], SectionRenderer]:
    """Register a renderer for ``suite``'s results; ``cross_suite`` renders it whatever suites ran."""

    def decorate(renderer: SectionRenderer) -> SectionRenderer:
        (_CROSS_SUITE if cross_suite else _RENDERERS)[suite] = renderer
        return renderer

    return decorate


def section_renderers() -> dict[str, SectionRenderer]:
    return dict(_RENDERERS)


def cross_suite_renderers() -> dict[str, SectionRenderer]:
    return dict(_CROSS_SUITE)


def format_number(value: Any, digits: int = 3) -> str:
    """Format a metric for a table cell: compact scientific notation, blank when missing."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if 1e-3 <= magnitude < 1e5:
            return f"{value:.{digits}g}"
        return f"{value:.{digits - 1}e}"
    return str(value)
