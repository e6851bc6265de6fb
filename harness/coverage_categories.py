"""Why an automatic case does not run: the categories, and the skip message that carries one.

Kept free of torch and transformers imports, so that reports render on machines without them.
"""

from __future__ import annotations

import re

AUTOMATIC_TAG = "automatic"

MISSING_DEPENDENCY = "missing optional dependency"
DEFAULT_CONFIG_FAILS = "default config does not construct"
INPUTS_UNAVAILABLE = "needs inputs the harness cannot make"
SHRINKING_INCONSISTENT = "shrinking inconsistent"
CATEGORIES = (MISSING_DEPENDENCY, DEFAULT_CONFIG_FAILS, INPUTS_UNAVAILABLE, SHRINKING_INCONSISTENT)

NOT_COVERED_PATTERN = re.compile(r"^not covered \(([^)]+)\): ")


class NotCovered(Exception):
    """An automatic case that cannot run here, with the category of the reason."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"not covered ({category}): {detail}")
        self.category = category
        self.detail = detail


def not_covered_category(message: str) -> str | None:
    """Return the category a skip message names, or None when it is not a coverage skip."""
    match = NOT_COVERED_PATTERN.match(message or "")
    return match.group(1) if match else None
