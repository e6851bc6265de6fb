"""The consistency section of the report: probe counts, counterexamples, determinism per backend."""

from __future__ import annotations

from harness.report import render_report
from harness.report.consistency import probe_of
from harness.results import Result
from tests.report.test_report import write_run


def consistency_result(probe: str, **changes) -> Result:
    fields = {
        "run_id": "r",
        "suite": "consistency",
        "case": "llama-tiny",
        "backend": "eager:fp32:eager",
        "check": f"suites/test_consistency.py::{probe}[llama-tiny/eager:fp32:eager/drawn]",
        "status": "pass",
        "input": "drawn",
        "metrics": {"examples": 3, "bitwise": True, "max_abs_error": 0.0, "worst_example": "batch_size=1, seq_len=2"},
        "thresholds": {"bitwise": True, "source": "bitwise: fp32 eager on CPU"},
        "margin": 1.0,
    }
    fields.update(changes)
    return Result(**fields)


def test_probe_of_maps_check_ids():
    assert probe_of("suites/test_consistency.py::test_causality[llama-tiny/eager:fp32:eager/drawn]") == "causality"
    assert probe_of("suites/test_consistency.py::test_static_cache[x/y/drawn]") == "generation: static vs dynamic"


def test_section_lists_counterexample_and_determinism(tmp_path):
    failing = consistency_result(
        "test_causality",
        status="fail",
        message="swapping the token at position 6 of row 0 changed the output at position 5, before it",
        metrics={
            "examples": 41,
            "bitwise": False,
            "counterexample": "batch_size=1, seq_len=7, padding=none, seed=0, row=0, position=6",
            "first_differing_module": "model.layers.0.mlp",
        },
        margin=float("-inf"),
    )
    determinism = consistency_result(
        "test_determinism",
        backend="eager:bf16:eager",
        metrics={"examples": 3, "bitwise": False, "max_abs_error": 2e-3, "device": "cuda"},
    )
    write_run(tmp_path, [failing, determinism, consistency_result("test_padding_invariance")])
    page = render_report(tmp_path).read_text()

    assert 'id="consistency"' in page
    assert "Shrunk counterexamples" in page
    assert "batch_size=1, seq_len=7, padding=none, seed=0, row=0, position=6" in page
    assert "model.layers.0.mlp" in page
    assert "0 of 1" in page
    assert "0.002" in page
