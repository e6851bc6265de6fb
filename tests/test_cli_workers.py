"""``harness run --workers``: the pytest-xdist arguments it passes, and how it rejects bad values."""

from __future__ import annotations

import pytest

from harness.cli import CommandError, worker_args

SCHEDULING = ["--dist", "loadgroup", "--max-worker-restart", "1000"]


def test_workers_become_xdist_arguments():
    assert worker_args("2") == ["-n", "2", *SCHEDULING]
    assert worker_args("auto") == ["-n", "auto", *SCHEDULING]


def test_zero_workers_run_in_process():
    assert worker_args("0") == []
    assert worker_args(None) == []


@pytest.mark.parametrize("value", ["-1", "two", ""])
def test_invalid_worker_count_is_rejected(value):
    with pytest.raises(CommandError, match=f"--workers {value!r} is not a non-negative integer or 'auto'"):
        worker_args(value)
