"""Matplotlib figures embedded in the report as PNG data URIs, so the page opens offline."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen before pyplot loads

STATUS_COLOURS = {
    "pass": "#2e7d32",
    "fail": "#c62828",
    "error": "#6a1b9a",
    "xfail": "#ef6c00",
    "skip": "#9e9e9e",
}
DTYPE_COLOURS = {"fp32": "#1565c0", "bf16": "#ef6c00", "fp16": "#2e7d32", "fp64": "#6d4c41"}


def new_figure(width: float = 8.0, height: float = 4.0) -> tuple[Any, Any]:
    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    return figure, axes


def to_data_uri(figure: Any) -> str:
    """Render ``figure`` to a base64 PNG data URI and close it."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
