"""Report sections for compiled and quantized backends: coverage table, compile table, comparison figure."""

from __future__ import annotations

from harness.report import render_report
from harness.report.backends import backend_comparison_figure
from harness.report.quantization import coverage_table
from harness.results import Result, load_results
from tests.report.test_report import parity_result, write_run

COVERAGE = {
    "linear": {"parameters": 1000, "quantized_parameters": 1000, "quantized_fraction": 1.0, "kept_reasons": []},
    "experts": {
        "parameters": 3000,
        "quantized_parameters": 0,
        "quantized_fraction": 0.0,
        "kept_reasons": ["fused 3-D experts parameter: torchao int8 weight-only converts 2-D linear weights only"],
    },
    "norm": {"parameters": 10, "quantized_parameters": 0, "quantized_fraction": 0.0, "kept_reasons": []},
}


def integrity_result(**changes):
    fields = {
        "run_id": "r",
        "suite": "quantization",
        "case": "qwen3-moe-tiny",
        "backend": "quantized-int8wo:fp32:transformers",
        "check": "suites/test_quantization.py::test_weight_integrity[qwen3-moe-tiny/"
        "quantized-int8wo:fp32:transformers/plain]",
        "status": "pass",
        "input": "plain",
        "metrics": {
            "quantized_parameter_fraction": 0.25,
            "quantized_byte_fraction": 0.25,
            "size_ratio": 0.81,
            "coverage": COVERAGE,
            "max_weight_error_used": 0.99,
        },
        "message": "MoE experts stay in float",
    }
    fields.update(changes)
    return Result(**fields)


def compile_result(**changes):
    fields = {
        "run_id": "r",
        "suite": "compile",
        "case": "llama-tiny",
        "backend": "compiled:fp32:default",
        "check": "suites/test_compile.py::test_compiled_new_length[llama-tiny/compiled:fp32:default/plain-24]",
        "status": "pass",
        "input": "plain-24",
        "metrics": {"compile_s": 12.5, "fullgraph": True, "graph_breaks": 0, "recompiles_new_length": 1},
    }
    fields.update(changes)
    return Result(**fields)


def test_coverage_table_shows_experts_left_in_float(tmp_path):
    write_run(tmp_path, [integrity_result()])
    table = coverage_table(load_results(tmp_path / "results.jsonl"))
    row = dict(zip(table.columns, table.rows[0], strict=True))

    assert row["linear quantized"] == "100% of 1,000"
    assert row["experts quantized"] == "0% of 3,000"
    assert row["parameters quantized"] == "25%"
    assert "experts: fused 3-D experts parameter" in row["kept in float, and why"]


def test_report_has_quantization_and_compile_sections(tmp_path):
    write_run(tmp_path, [integrity_result(), compile_result()])
    page = render_report(tmp_path).read_text()

    assert 'id="quantization"' in page
    assert "Quantization coverage and weight integrity" in page
    assert 'id="compile"' in page
    assert "Compile and a second sequence length" in page


def test_comparison_figure_needs_two_backends(tmp_path):
    quantized = parity_result(
        backend="quantized-int8wo:fp32:transformers", metrics={"cosine": 0.9999, "top1_agreement": 0.97}
    )
    write_run(tmp_path, [parity_result(), quantized])
    results = load_results(tmp_path / "results.jsonl")

    assert backend_comparison_figure(results).startswith("data:image/png;base64,")
    assert backend_comparison_figure(results[results["backend"] == "eager:bf16:sdpa"]) is None
