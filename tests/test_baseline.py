"""Comparing runs: a planted regression is flagged, and nothing else."""

from __future__ import annotations

import pytest

from harness.backends import register_backend, unregister_backend
from harness.baseline import Thresholds, compare_runs
from harness.report import AUTO, render_report
from harness.results import Result, ResultsWriter, write_run_info
from harness.runs import earlier_runs, load_run
from tests.planted import PlainInputNoiseBackend


def planted_run(run_suites, run_id, scale):
    backend = PlainInputNoiseBackend(module_name="model.layers.1", scale=scale)
    register_backend(backend)
    try:
        return run_suites(
            "--cases", "llama-tiny,gpt2-tiny", "--backends", "eager:fp32,planted:fp32:sdpa", run_id=run_id
        )
    finally:
        unregister_backend(backend.name)


def test_planted_regression_is_flagged_and_nothing_else(run_suites):
    before = planted_run(run_suites, "before", scale=0.0)
    after = planted_run(run_suites, "after", scale=1e-2)
    assert earlier_runs(after.run_dir) == [before.run_dir]

    comparison = compare_runs(load_run(after.run_dir), load_run(before.run_dir))

    assert [change.check for change in comparison.status_changes] == [
        "suites/test_parity.py::test_parity[llama-tiny/planted:fp32:sdpa/plain]"
    ]
    assert comparison.status_changes[0].kind == "new failure"
    assert comparison.regressions == []
    assert comparison.environment_changes == []

    page = render_report(after.run_dir, baseline=AUTO).read_text()
    assert "Changes since the baseline" in page
    assert "1 status changes, 0 metric regressions" in page


def write(run_dir, rows, started_at, versions=None):
    writer = ResultsWriter(run_dir / "results.jsonl")
    for row in rows:
        writer.write(row)
    writer.close()
    environment = {"device": "cpu", "versions": versions or {"torch": "2.13.0"}}
    write_run_info(run_dir, {"run_id": run_dir.name, "started_at": started_at, "environment": environment})
    return load_run(run_dir)


def row(check="c1", status="pass", margin=0.8, **metrics):
    return Result(
        run_id="r",
        suite="latency",
        case="llama-tiny",
        backend="eager:fp32:sdpa",
        check=check,
        status=status,
        margin=margin,
        metrics=metrics,
    )


def test_margin_drop_beyond_threshold_is_a_regression(tmp_path):
    old = write(tmp_path / "a", [row(margin=0.8)], "1")
    new = write(tmp_path / "b", [row(margin=0.3)], "2")

    (regression,) = compare_runs(new, old).regressions
    assert regression.metric == "margin"
    assert "50% more of the tolerance consumed" in regression.detail
    assert compare_runs(new, old, thresholds=Thresholds(margin_drop=0.6)).regressions == []


def test_slower_median_counts_only_when_intervals_separate(tmp_path):
    old = write(tmp_path / "a", [row(median_ms=10.0, median_ms_ci_low=9.5, median_ms_ci_high=10.5)], "1")
    overlapping = write(tmp_path / "b", [row(median_ms=11.5, median_ms_ci_low=10.2, median_ms_ci_high=12.5)], "2")
    separated = write(tmp_path / "c", [row(median_ms=12.0, median_ms_ci_low=11.5, median_ms_ci_high=12.5)], "3")
    small = write(tmp_path / "d", [row(median_ms=10.8, median_ms_ci_low=10.6, median_ms_ci_high=11.0)], "4")

    assert compare_runs(overlapping, old).regressions == []
    (regression,) = compare_runs(separated, old).regressions
    assert regression.metric == "median_ms"
    assert "+20%" in regression.detail
    assert compare_runs(small, old).regressions == []


def test_status_flipping_across_history_is_flaky(tmp_path):
    runs = [
        write(tmp_path / name, [row(status=status)], name)
        for name, status in [("1", "pass"), ("2", "fail"), ("3", "pass"), ("4", "fail")]
    ]
    comparison = compare_runs(runs[3], runs[2], history=[runs[1], runs[0]])
    assert [change.kind for change in comparison.status_changes] == ["flaky"]


def test_fixed_and_version_changes_are_reported(tmp_path):
    old = write(tmp_path / "a", [row(status="fail")], "1", versions={"torch": "2.13.0", "transformers": "5.25.0"})
    new = write(tmp_path / "b", [row(status="pass")], "2", versions={"torch": "2.14.0", "transformers": "5.25.0"})
    comparison = compare_runs(new, old)

    assert [change.kind for change in comparison.status_changes] == ["fixed"]
    assert comparison.environment_changes == [("torch", "2.13.0", "2.14.0")]


def test_new_and_removed_checks_are_counted(tmp_path):
    old = write(tmp_path / "a", [row(check="gone"), row(check="kept")], "1")
    new = write(tmp_path / "b", [row(check="kept"), row(check="new")], "2")
    comparison = compare_runs(new, old)
    assert (comparison.new_checks, comparison.removed_checks) == (1, 1)
    assert comparison.is_empty


def test_report_without_earlier_run_has_no_comparison(tmp_path):
    write(tmp_path / "only", [row()], "1")
    page = render_report(tmp_path / "only").read_text()
    assert "Changes since the baseline" not in page


@pytest.mark.parametrize("baseline", [None])
def test_report_can_skip_the_comparison(tmp_path, baseline):
    write(tmp_path / "a", [row(margin=0.9)], "1")
    write(tmp_path / "b", [row(margin=0.1)], "2")
    page = render_report(tmp_path / "b", baseline=baseline).read_text()
    assert "Changes since the baseline" not in page
