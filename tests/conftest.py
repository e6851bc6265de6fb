"""Shared fixtures: an isolated model cache, and running the suites through pytest in-process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.backends import register_backend, unregister_backend
from harness.results import load_results

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
# The repository's expected_status.toml would turn known failures into xfail; tests that
# need an expected-status file pass their own --expected, which comes later and wins.
NO_EXPECTED_FAILURES = str(ROOT / "tests" / "no-expected.toml")
SUITE_RUN_OPTIONS = ("--device", "cpu", "-p", "no:cacheprovider", "--expected", NO_EXPECTED_FAILURES)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build models into a cache of the test session's own, never the user's."""
    cache = tmp_path_factory.mktemp("harness-cache")
    previous = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("HARNESS_CACHE_DIR", None)
    else:
        os.environ["HARNESS_CACHE_DIR"] = previous


@dataclass
class SuiteRun:
    """What a run of the suites left behind: pytest's exit code and output, the run folder, its results."""

    exit_code: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def results(self):
        files = sorted(self.run_dir.glob("results*.jsonl"))
        return load_results(files)

    def result(self, **where: str):
        frame = self.results
        for column, value in where.items():
            frame = frame[frame[column] == value]
        assert len(frame) == 1, f"expected one result for {where}, found {len(frame)}"
        return frame.iloc[0]


@pytest.fixture
def run_suites(tmp_path: Path, capfd: pytest.CaptureFixture):
    """Run the suites with ``pytest.main`` in this process; return a SuiteRun.

    pytester's in-process runs restore sys.modules afterwards, and re-importing torch's
    operator libraries then fails, so the suites run through ``pytest.main`` directly.
    """

    def run(*args: str, suites: tuple[str, ...] = ("test_parity.py",), run_id: str = "run") -> SuiteRun:
        out = tmp_path / "reports"
        paths = [str(SUITES / name) for name in suites]
        capfd.readouterr()
        exit_code = pytest.main([*paths, "--out", str(out), "--run-id", run_id, *SUITE_RUN_OPTIONS, *args])
        captured = capfd.readouterr()
        return SuiteRun(int(exit_code), captured.out, captured.err, out / run_id)

    return run


@pytest.fixture
def registered():
    """Register backends for one test (``registered(backend)``); unregister them afterwards."""
    names = []

    def register(backend):
        register_backend(backend)
        names.append(backend.name)
        return backend

    yield register
    for name in names:
        unregister_backend(name)
