"""Runs that survive crashes and hangs, resume, shard and merge, and honour expected failures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.cli import main
from harness.expected import Expectation, write_expected
from harness.results import iter_results
from harness.runs import load_run
from harness.sharding import merge_runs
from tests.conftest import ROOT, SUITE_RUN_OPTIONS, SUITES, SuiteRun

WORKERS = ["-n", "1", "--dist", "loadgroup", "--max-worker-restart", "100", "-p", "tests.fault_plugin"]


@pytest.fixture
def run_with_workers(tmp_path):
    """Run the parity suite with pytest-xdist workers in a pytest process of its own; return a SuiteRun.

    Its own process, as ``harness run`` starts one, keeps the state of earlier in-process
    runs out, and its working directory makes ``tests.fault_plugin`` importable in workers.
    """

    def run(*args: str, run_id: str = "run") -> SuiteRun:
        out = tmp_path / "reports"
        command = [sys.executable, "-m", "pytest", str(SUITES / "test_parity.py"), "--out", str(out)]
        command += ["--run-id", run_id, *SUITE_RUN_OPTIONS, *args, *WORKERS]
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
        return SuiteRun(completed.returncode, completed.stdout, completed.stderr, out / run_id)

    return run


def by_check(run_dir):
    return {row.check: row for row in load_run(run_dir).results.itertuples()}


def test_segfault_recorded_as_error(run_with_workers):
    backends = "eager:fp32:sdpa,segfaulting:bf16:sdpa,segfaulting:fp32:sdpa"
    run = run_with_workers("--cases", "gpt2-tiny", "--backends", backends)
    assert run.exit_code == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:] + run.stderr[-3000:]
    results = load_run(run.run_dir).results
    crashed = results[results["backend"] == "segfaulting:bf16:sdpa"]
    others = results[results["backend"] != "segfaulting:bf16:sdpa"]

    assert len(crashed) > 0
    assert set(crashed["status"]) == {"error"}
    assert all("process died" in message for message in crashed["message"])
    assert set(others["status"]) <= {"pass", "skip"}
    assert set(others["backend"]) == {"eager:fp32:sdpa", "segfaulting:fp32:sdpa"}
    assert (run.run_dir / "index.html").exists()


def test_hang_is_stopped_and_recorded_as_a_timeout(run_with_workers):
    run = run_with_workers(
        "--cases",
        "gpt2-tiny",
        "--backends",
        "hanging:bf16:sdpa,hanging:fp32:sdpa",
        "--suites",
        "parity",
        "-k",
        "test_parity and plain and not golden",
        "--timeout",
        "20",
        "--timeout-method",
        "thread",
    )
    assert run.exit_code == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:] + run.stderr[-3000:]
    hung = run.result(backend="hanging:bf16:sdpa")
    assert hung["status"] == "error"
    assert "timed out after" in hung["message"]
    assert run.result(backend="hanging:fp32:sdpa")["status"] == "pass"


def test_resume_skips_finished_checks(run_suites):
    first = run_suites("--cases", "gpt2-tiny", "--backends", "eager:fp32", "--suites", "parity", run_id="r")
    finished = set(by_check(first.run_dir))
    crashed = "suites/test_parity.py::test_parity[llama-tiny/eager:fp32:sdpa/plain]"
    (first.run_dir / "inflight-main.json").write_text(json.dumps({"check": crashed, "started": 0.0, "pid": 1}))

    second = run_suites(
        "--cases", "gpt2-tiny,llama-tiny", "--backends", "eager:fp32", "--suites", "parity", "--resume", run_id="r"
    )
    rows = [result.check for path in sorted(second.run_dir.glob("results*.jsonl")) for result in iter_results(path)]

    assert len(rows) == len(set(rows)), "a finished check ran twice"
    assert finished <= set(rows)
    assert by_check(second.run_dir)[crashed].status == "error"
    assert "died in an earlier attempt" in by_check(second.run_dir)[crashed].message
    assert any(
        check.startswith("suites/test_parity.py::test_parity[llama-tiny/eager:fp32:eager")
        or "llama-tiny/eager:fp32:eager" in check
        for check in rows
    )
    assert not list(second.run_dir.glob("inflight-*.json"))


def test_resume_without_run_id_is_a_usage_error(run_suites):
    run = run_suites("--cases", "gpt2-tiny", "--resume", run_id="does-not-exist")
    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    assert "run folder" in run.stderr
    assert "not found" in run.stderr


def comparable(run_dir):
    """Return each check's result without what differs between any two runs: ids and times."""

    def kept(name):
        return name not in {"started_at", "run_id"} and not name.endswith("_s")

    def without_times(value):
        return {name: item for name, item in value.items() if kept(name)} if isinstance(value, dict) else value

    # As JSON text, so that a missing value (NaN) equals itself.
    return {
        row["check"]: json.dumps({name: without_times(value) for name, value in row.items() if kept(name)}, default=str)
        for row in load_run(run_dir).results.to_dict("records")
    }


def test_merged_shards_equal_the_unsharded_run(run_suites, tmp_path):
    arguments = (
        "--cases",
        "llama-tiny,gpt2-tiny,bert-tiny",
        "--backends",
        "eager:fp32,eager:bf16:sdpa",
        "--suites",
        "parity",
    )
    whole = run_suites(*arguments, run_id="whole")
    first = run_suites(*arguments, "--shard", "1/2", run_id="shard-1")
    second = run_suites(*arguments, "--shard", "2/2", run_id="shard-2")

    assert set(by_check(first.run_dir)).isdisjoint(by_check(second.run_dir))
    merged = merge_runs([first.run_dir, second.run_dir], tmp_path / "merged", "merged")
    assert comparable(merged) == comparable(whole.run_dir)


def test_bad_shard_is_a_usage_error(run_suites):
    run = run_suites("--cases", "gpt2-tiny", "--shard", "3/2")
    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    assert "invalid shard '3/2'" in run.stderr


def test_expected_failure_reported_fixed(run_suites, tmp_path):
    passing = "suites/test_parity.py::test_parity[gpt2-tiny/eager:fp32:sdpa/plain]"
    expected = tmp_path / "expected.toml"
    write_expected(expected, {passing: Expectation(passing, "thought broken")})

    run = run_suites(
        "--cases", "gpt2-tiny", "--backends", "eager:fp32", "--suites", "parity", "--expected", str(expected)
    )
    result = run.result(check=passing)
    assert result["status"] == "pass"
    assert result["message"] == "passed although expected to fail: thought broken"


def test_harness_run_writes_junit_csv_and_summary(tmp_path):
    status = main(
        [
            "run",
            "--cases",
            "gpt2-tiny",
            "--backends",
            "eager:fp32:sdpa",
            "--suites",
            "parity",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--run-id",
            "x",
            "--workers",
            "0",
        ]
    )
    run_dir = tmp_path / "x"

    assert status == 0
    assert "<testsuite" in (run_dir / "junit.xml").read_text()
    assert (run_dir / "results.csv").read_text().startswith("run_id,")
    assert "## Conformance run x" in (run_dir / "summary.md").read_text()


def test_bad_expected_file_is_usage_error(run_with_workers, tmp_path):
    expected = tmp_path / "expected.toml"
    expected.write_text("garbage [[")

    run = run_with_workers("--cases", "gpt2-tiny", "--expected", str(expected))

    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    assert f"expected-status file '{expected}' is not valid TOML" in run.stderr
    assert "INTERNALERROR" not in run.stdout + run.stderr
