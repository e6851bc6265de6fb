"""The HTML report: self-contained, escaped, with the matrix, parity section and environment."""

from __future__ import annotations

import re

from harness.report import render_report, summary_matrix
from harness.results import Result, ResultsWriter, load_results, write_run_info


def write_run(run_dir, results, info=None):
    writer = ResultsWriter(run_dir / "results.jsonl")
    for result in results:
        writer.write(result)
    writer.close()
    write_run_info(run_dir, info or {"run_id": run_dir.name, "environment": {"device": "cpu", "versions": {}}})


def parity_result(**changes):
    fields = {
        "run_id": "r",
        "suite": "parity",
        "case": "llama-tiny",
        "backend": "eager:bf16:sdpa",
        "check": "suites/test_parity.py::test_parity[llama-tiny/eager:bf16:sdpa/plain]",
        "status": "pass",
        "input": "plain",
        "metrics": {"dtype": "bf16", "max_abs_error": 0.01, "reference_max_abs": 1.0, "cosine": 0.9999},
        "thresholds": {"atol": 0.001, "rtol": 0.04, "source": "table eager/bf16"},
        "margin": 0.7,
    }
    fields.update(changes)
    return Result(**fields)


def test_script_in_a_message_renders_as_text(tmp_path):
    write_run(tmp_path, [parity_result(status="fail", message="<script>alert('x')</script> & more")])
    page = render_report(tmp_path).read_text()

    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in page


def test_strings_from_cases_and_environment_are_escaped(tmp_path):
    info = {"run_id": "r", "environment": {"device": "cpu", "cpu": "<b>cpu</b>", "versions": {}}}
    write_run(tmp_path, [parity_result(case="<img src=x onerror=alert(1)>")], info)
    page = render_report(tmp_path).read_text()

    assert "<img src=x" not in page
    assert "&lt;b&gt;cpu&lt;/b&gt;" in page


def test_page_is_self_contained(tmp_path):
    write_run(
        tmp_path,
        [
            parity_result(),
            parity_result(
                backend="eager:fp16:sdpa", metrics={"dtype": "fp16", "max_abs_error": 1e-3, "reference_max_abs": 1.0}
            ),
        ],
    )
    page = render_report(tmp_path).read_text()

    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page


def test_matrix_cell_shows_worst_status(tmp_path):
    write_run(tmp_path, [parity_result(), parity_result(status="fail", input="left-padded")])
    matrix = summary_matrix(load_results(tmp_path / "results.jsonl"))

    cell = matrix["cells"][("llama-tiny", "eager:bf16:sdpa")]
    assert cell["status"] == "fail"
    assert cell["text"] == "1 fail 1 pass"


def test_failures_section_lists_failing_checks(tmp_path):
    write_run(tmp_path, [parity_result(status="error", message="building case 'x' failed")])
    page = render_report(tmp_path).read_text()

    assert 'id="problems"' in page
    assert "building case &#39;x&#39; failed" in page


def test_missing_results_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="no results.jsonl in"):
        render_report(tmp_path)


def test_matrix_folds_experts_implementations_into_one_column(tmp_path):
    moe = {"dtype": "bf16", "experts": "grouped_mm"}
    write_run(
        tmp_path,
        [
            parity_result(case="olmoe-tiny", backend="eager:bf16:sdpa:grouped_mm", metrics=moe),
            parity_result(case="olmoe-tiny", backend="eager:bf16:sdpa:eager", metrics={**moe, "experts": "eager"}),
        ],
    )
    matrix = summary_matrix(load_results(tmp_path / "results.jsonl"))

    assert matrix["backends"] == ["eager:bf16:sdpa"]
    assert matrix["cells"][("olmoe-tiny", "eager:bf16:sdpa")]["text"] == "2 pass"
