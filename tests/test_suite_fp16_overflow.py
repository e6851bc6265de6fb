"""The fp16_overflow suite end to end: planted overflows caught and named, warnings, load paths, the report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.backends import register_backend, unregister_backend
from harness.report.fp16_overflow import render_fp16_overflow, verdict
from tests.planted import MultiplyingLayerBackend, pooler_forward_scaling_in_working_dtype

SUITE_FILE = ("test_fp16_overflow.py",)


@pytest.fixture
def multiplying_backend():
    backend = MultiplyingLayerBackend(module_name="model.layers.0.input_layernorm", factor=1e5)
    register_backend(backend)
    yield backend
    unregister_backend(backend.name)


def overflow_result(run, backend: str):
    return run.result(suite="fp16_overflow", backend=backend)


def test_module_multiplying_by_1e5_is_named_first_nonfinite(run_suites, multiplying_backend):
    run = run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "multiplying-layer:fp16:eager",
        "--stress-profiles",
        "none",
        suites=SUITE_FILE,
    )
    result = overflow_result(run, "multiplying-layer:fp16:eager")

    assert result["status"] == "fail"
    assert result["metrics"]["first_nonfinite_module"] == "model.layers.0.input_layernorm.1"
    assert "first non-finite module: model.layers.0.input_layernorm.1 [MultiplyBy]" in result["message"]
    assert "its inputs [" in result["message"]
    assert "the fp32 reference has no module of that name" in result["message"]
    assert result["margin"] == float("-inf")


def test_fp16_scaling_pooler_named_under_stress(run_suites, monkeypatch):
    from transformers.models.gemma4 import modeling_gemma4

    monkeypatch.setattr(modeling_gemma4.Gemma4VisionPooler, "forward", pooler_forward_scaling_in_working_dtype)
    run = run_suites("--cases", "gemma4-tiny", "--backends", "eager:fp16:eager", suites=SUITE_FILE)
    result = overflow_result(run, "eager:fp16:eager")
    profiles = result["metrics"]["profiles"]

    assert result["status"] == "fail"
    assert result["metrics"]["first_nonfinite_module"] == "model.vision_tower.pooler"
    assert result["metrics"]["first_nonfinite_profile"] == "gemma4-vision-pooler"
    assert "first non-finite module: model.vision_tower.pooler [Gemma4VisionPooler]" in result["message"]
    assert profiles["none"]["status"] == "finite"
    assert profiles["gemma4-vision-pooler"]["status"] == "non-finite"


def test_library_pooler_stays_finite_under_stress(run_suites):
    run = run_suites("--cases", "gemma4-tiny", "--backends", "eager:fp16:eager", suites=SUITE_FILE)
    result = overflow_result(run, "eager:fp16:eager")
    pooler = result["metrics"]["profiles"]["gemma4-vision-pooler"]

    assert result["status"] == "pass"
    assert pooler["status"] == "finite"
    assert "post_feedforward_layernorm.weight x 2^" in pooler["plan"]
    assert "std_bias set to the features' per-channel mean" in pooler["plan"]


def test_every_result_records_three_lowest_headroom_modules(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager", suites=SUITE_FILE)
    results = run.results

    assert set(results["backend"]) == {"eager:fp16:eager", "eager:fp16:sdpa", "eager:bf16:eager", "eager:bf16:sdpa"}
    for _, result in results.iterrows():
        lowest = result["metrics"]["lowest_headroom_modules"]
        assert len(lowest) == 3
        assert [entry["headroom"] for entry in lowest] == sorted(entry["headroom"] for entry in lowest)
        assert {"module", "class", "profile", "headroom", "max_abs", "tensor", "dtype"} <= set(lowest[0])


def test_headroom_below_margin_warns_on_fp16_only(run_suites):
    run = run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "eager:fp16:eager,eager:bf16:eager",
        "--stress-profiles",
        "none",
        "--fp16-margin",
        "1e9",
        suites=SUITE_FILE,
    )
    fp16 = overflow_result(run, "eager:fp16:eager")
    bf16 = overflow_result(run, "eager:bf16:eager")

    assert fp16["status"] == "pass"
    assert fp16["metrics"]["warned"] is True
    assert "is below the 1e+09x margin" in fp16["message"]
    assert fp16["thresholds"]["headroom_margin"] == 1e9
    assert verdict(fp16) == "warn"
    assert bf16["metrics"]["warned"] is False
    assert verdict(bf16) == "pass"


def test_load_path_dependence_is_reported_for_t5_wo(run_suites):
    run = run_suites("--cases", "t5-tiny", "--backends", "eager:fp16:eager", suites=SUITE_FILE)
    result = overflow_result(run, "eager:fp16:eager")
    load_path = result["metrics"]["load_path"]

    assert result["status"] == "pass"
    assert "load-path" in result["metrics"]["warnings"]
    assert load_path["declared"] == ["wo"]
    assert load_path["depends"] is True
    assert load_path["profiles"]["keep-in-fp32"] == {
        "from_pretrained": "finite",
        "half": "non-finite",
        "half_first_nonfinite": "encoder.block.0.layer.1.DenseReluDense.wo",
    }
    assert "fp16 safety depends on the load path" in result["message"]


def test_loader_ignoring_keep_in_fp32_fails(run_suites, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.PreTrainedModel, "_get_dtype_plan", lambda self, dtype: {})
    run = run_suites(
        "--cases", "t5-tiny", "--backends", "eager:fp16:eager", "--stress-profiles", "none", suites=SUITE_FILE
    )
    result = overflow_result(run, "eager:fp16:eager")

    assert result["status"] == "fail"
    assert "declares keep-in-fp32 modules ['wo'], but from_pretrained(dtype=torch.float16)" in result["message"]


def test_unknown_stress_profile_is_one_line_usage_error(run_suites):
    run = run_suites("--cases", "llama-tiny", "--stress-profiles", "entry-scal", suites=SUITE_FILE)

    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in run.stderr.splitlines() if "entry-scal" in line]
    assert len(lines) == 1
    assert lines[0].startswith("ERROR: unknown stress profile 'entry-scal'; known profiles: default, all, none")


def test_margin_below_one_is_usage_error(run_suites):
    run = run_suites("--cases", "llama-tiny", "--fp16-margin", "0.5", suites=SUITE_FILE)

    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --fp16-margin 0.5 is invalid; give a headroom factor of at least 1, such as 4" in run.stderr


def test_suite_runs_by_default_beside_parity(run_suites):
    run = run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "eager:fp16:eager",
        "--stress-profiles",
        "none",
        suites=("test_parity.py", *SUITE_FILE),
    )

    assert set(run.results["suite"]) == {"parity", "fp16_overflow"}


def test_report_figures_and_lowest_table(run_suites):
    run = run_suites(
        "--cases",
        "llama-tiny,t5-tiny",
        "--backends",
        "eager:fp16:eager,eager:bf16:eager",
        "--stress-profiles",
        "none",
        suites=SUITE_FILE,
    )
    section = render_fp16_overflow(run.results, {})
    lowest = next(table for table in section.tables if table.caption.startswith("Lowest-headroom"))

    assert len(section.figures) == 2
    assert all(figure.data_uri.startswith("data:image/png;base64,") for figure in section.figures)
    assert {row[0] for row in lowest.rows} == {"llama-tiny", "t5-tiny"}
    assert len(lowest.rows) == 6
    assert "fp16 overflow" in (run.run_dir / "index.html").read_text()


def test_section_renders_without_torch(run_suites, tmp_path):
    run = run_suites(
        "--cases", "t5-tiny", "--backends", "eager:fp16:eager", "--stress-profiles", "keep-in-fp32", suites=SUITE_FILE
    )
    # The nightly merge job renders reports where torch is not installed.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from pathlib import Path\n"
        "from harness.report import render_report\n"
        "render_report(Path(sys.argv[1]), Path(sys.argv[2]))\n"
    )
    page = tmp_path / "page.html"
    completed = subprocess.run(
        [sys.executable, "-c", code, str(run.run_dir), str(page)], capture_output=True, text=True, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert "keep-in-fp32" in page.read_text()
    assert "the overflow those declarations guard against" in page.read_text()
