"""Where the harness keeps built models and writes runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return the folder for built tiny models and converted checkpoints.

    ``HARNESS_CACHE_DIR`` overrides the default, ``$XDG_CACHE_HOME/harness`` (or
    ``~/.cache/harness``).
    """
    configured = os.environ.get("HARNESS_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "harness"


def default_reports_dir() -> Path:
    return Path(os.environ.get("HARNESS_REPORTS_DIR", "reports"))
