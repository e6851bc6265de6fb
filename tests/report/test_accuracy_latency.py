"""The accuracy and latency sections: tables, speedup and memory bars, the accuracy-against-speed scatter."""

from __future__ import annotations

import subprocess
import sys

from harness.report import render_report
from harness.report.accuracy import render_accuracy
from harness.report.latency import render_latency
from harness.results import Result, load_results
from tests.report.test_report import write_run


def latency_result(backend: str, speedup: float | None, **changes) -> Result:
    metrics = {
        "headline": "decode",
        "decode_median_ms": 40.0,
        "decode_p90_ms": 45.0,
        "decode_p99_ms": 50.0,
        "decode_cv": 0.05,
        "ttft_median_ms": 60.0,
        "tokens_per_s": 25.0,
        "prefill_lengths": [16, 64],
        "prefill_16_median_ms": 20.0,
        "prefill_64_median_ms": 50.0,
        "prepare_s": 0.4,
        "weight_bytes": 540 * 2**20,
        "peak_memory_bytes": 30 * 2**20,
        "peak_memory_kind": "resident set growth",
    }
    if speedup is not None:
        metrics.update(speedup=speedup, speedup_low=speedup * 0.9, speedup_high=speedup * 1.1, prefill_16_speedup=1.2)
    fields = {
        "run_id": "r",
        "suite": "latency",
        "case": "smollm2-135m",
        "backend": backend,
        "check": f"suites/test_latency.py::test_latency[smollm2-135m/{backend}/plain]",
        "status": "pass",
        "input": "plain",
        "metrics": metrics,
    }
    fields.update(changes)
    return Result(**fields)


def accuracy_result(backend: str, delta: float, **changes) -> Result:
    fields = {
        "run_id": "r",
        "suite": "accuracy",
        "case": "smollm2-135m",
        "backend": backend,
        "check": f"suites/test_accuracy.py::test_accuracy[harness_facts_mc-smollm2-135m/{backend}/plain]",
        "status": "pass",
        "input": "harness_facts_mc",
        "metrics": {
            "task": "harness_facts_mc",
            "kind": "multiple_choice",
            "weights": "trained",
            "items": 220,
            "score": 0.68 + delta,
            "score_stderr": 0.03,
            "reference_score": 0.68,
            "delta": delta,
            "delta_stderr": 0.01,
            "agreement": 0.98,
            "items_worse": 2,
            "items_better": 4,
            "p_value": 0.69,
        },
        "thresholds": {"max_drop": 0.02, "min_agreement": 0.85, "source": "accuracy eager/bf16"},
        "margin": 1.0,
    }
    fields.update(changes)
    return Result(**fields)


def results_frame(tmp_path, results):
    write_run(tmp_path, results)
    return load_results(tmp_path / "results.jsonl")


def test_latency_section_has_speedup_and_memory_bars(tmp_path):
    frame = results_frame(
        tmp_path,
        [latency_result("eager:fp32:eager", None), latency_result("eager:bf16:sdpa", 1.4)],
    )

    section = render_latency(frame, {})

    assert len(section.figures) == 2
    per_check, prefill = section.tables
    bf16 = next(row for row in per_check.rows if row[1] == "eager:bf16:sdpa")
    assert bf16[per_check.columns.index("speedup")] == "1.4"
    assert bf16[per_check.columns.index("95% CI")] == "1.26 to 1.54"
    assert bf16[per_check.columns.index("weights MiB")] == "540"
    assert prefill.columns == [
        "case",
        "backend",
        "status",
        "prefill 16 ms",
        "speedup 16",
        "prefill 64 ms",
        "speedup 64",
    ]


def test_latency_section_without_speedups_has_no_speedup_figure(tmp_path):
    frame = results_frame(tmp_path, [latency_result("eager:fp32:eager", None)])

    section = render_latency(frame, {})

    # Only the memory bars: the reference has no speedup over itself.
    assert len(section.figures) == 1


def test_accuracy_section_plots_delta_against_speedup(tmp_path):
    frame = results_frame(
        tmp_path,
        [
            accuracy_result("eager:fp32:eager", 0.0),
            accuracy_result("eager:bf16:sdpa", 0.009),
            latency_result("eager:fp32:eager", None),
            latency_result("eager:bf16:sdpa", 1.4),
        ],
    )

    section = render_accuracy(frame, {})

    assert len(section.figures) == 1
    assert "harness_facts_mc" in section.figures[0].caption
    table = section.tables[0]
    row = next(row for row in table.rows if row[1] == "eager:bf16:sdpa")
    assert row[table.columns.index("worse / better")] == "2 / 4"
    assert row[table.columns.index("allowed")] == "max drop 0.02"


def test_accuracy_section_without_latency_has_no_scatter(tmp_path):
    frame = results_frame(tmp_path, [accuracy_result("eager:bf16:sdpa", -0.05, status="fail")])

    section = render_accuracy(frame, {})

    assert section.figures == []
    assert section.tables[0].rows[0][3] == "fail"


def test_report_page_has_both_sections(tmp_path):
    write_run(
        tmp_path,
        [accuracy_result("eager:bf16:sdpa", 0.0), latency_result("eager:bf16:sdpa", 0.8)],
    )

    page = render_report(tmp_path).read_text()

    assert 'id="accuracy"' in page
    assert 'id="latency"' in page
    assert "this section failed to render" not in page


def test_sections_render_without_torch(tmp_path):
    write_run(tmp_path, [accuracy_result("eager:bf16:sdpa", 0.0), latency_result("eager:bf16:sdpa", 0.8)])
    # The nightly merge job renders reports where torch is not installed.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from pathlib import Path\n"
        "from harness.report import render_report\n"
        "render_report(Path(sys.argv[1]))\n"
    )

    completed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)

    assert completed.returncode == 0, completed.stderr
    page = (tmp_path / "index.html").read_text()
    assert 'id="accuracy"' in page
    assert 'id="latency"' in page
    assert "this section failed to render" not in page
