"""``harness run --workers``: the pytest-xdist arguments it passes, and how it rejects bad values."""

from __future__ import annotations

import pytest

from harness.cli import CommandError, worker_args


def test_workers_become_xdist_arguments():
    assert worker_args(None) == []
    assert worker_args("2") == ["-n", "2"]
    assert worker_args("auto") == ["-n", "auto"]


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_invalid_worker_count_is_rejected(value):
    with pytest.raises(CommandError, match=f"--workers {value!r} is not a positive integer or 'auto'"):
        worker_args(value)
