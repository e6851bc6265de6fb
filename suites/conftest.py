"""Validation of suite options at startup, so that a bad value is one usage error line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.accuracy import TaskFileError, resolve_tasks

# The accuracy suite's local task files.
TASKS_DIR = Path(__file__).parent / "tasks"


def pytest_configure(config: pytest.Config) -> None:
    selector = config.getoption("tasks", None)
    # Without lm-eval (and the YAML reader it brings) the accuracy suite skips its checks.
    if not selector or importlib.util.find_spec("lm_eval") is None:
        return
    try:
        resolve_tasks(selector, TASKS_DIR)
    except TaskFileError as error:
        raise pytest.UsageError(str(error)) from None
