"""The results file: append, flush, survive a cut-short line, load into pandas."""

from __future__ import annotations

import math

from harness.results import Result, ResultsWriter, iter_results, load_results


def make_result(**changes):
    fields = {
        "run_id": "r",
        "suite": "parity",
        "case": "llama-tiny",
        "backend": "eager:bf16:sdpa",
        "check": "c",
        "status": "pass",
    }
    fields.update(changes)
    return Result(**fields)


def test_each_record_is_on_disk_before_the_next(tmp_path):
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(make_result(check="first"))

    assert [result.check for result in iter_results(path)] == ["first"]
    writer.write(make_result(check="second"))
    writer.close()
    assert [result.check for result in iter_results(path)] == ["first", "second"]


def test_line_cut_short_by_a_crash_is_skipped(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(make_result(check="kept"))
    writer.close()
    with path.open("a") as handle:
        handle.write('{"run_id": "r", "suite": "par')

    assert [result.check for result in iter_results(path)] == ["kept"]
    assert "not a complete JSON record" in caplog.text


def test_non_finite_metrics_survive_the_round_trip(tmp_path):
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(make_result(metrics={"max_abs_error": math.inf, "rmse": math.nan}, margin=-math.inf))
    writer.close()

    (result,) = iter_results(path)
    assert result.metrics["max_abs_error"] == math.inf
    assert math.isnan(result.metrics["rmse"])
    assert result.margin == -math.inf


def test_load_results_flattens_metrics_into_columns(tmp_path):
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write(make_result(metrics={"cosine": 0.5}, thresholds={"rtol": 0.1}))
    writer.write(make_result(status="fail", metrics={"cosine": 0.25}))
    writer.close()

    frame = load_results(path)
    assert list(frame["status"]) == ["pass", "fail"]
    assert list(frame["metric.cosine"]) == [0.5, 0.25]
    assert frame["threshold.rtol"].iloc[0] == 0.1


def test_empty_file_loads_as_empty_frame_with_columns(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("")
    frame = load_results(path)
    assert frame.empty
    assert "status" in frame.columns
