"""The plugin end to end: checks run through pytest, one result row each, planted faults caught."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file

from harness.backends import register_backend, unregister_backend
from harness.backends.eager import reference_variant
from harness.cases import get_case
from harness.references import reference_paths
from tests.planted import NoisyLayerBackend


@pytest.fixture
def noisy_backend():
    backend = NoisyLayerBackend(module_name="model.layers.1", scale=1e-2)
    register_backend(backend)
    yield backend
    unregister_backend(backend.name)


def test_parity_passes_for_eager_variants(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32,eager:bf16")
    results = run.results
    live = results[results["check"].str.contains("test_parity\\[")]

    assert set(live["status"]) == {"pass"}
    assert set(live["backend"]) == {"eager:fp32:sdpa", "eager:bf16:eager", "eager:bf16:sdpa"}
    assert set(live["input"]) == {"plain", "left-padded"}
    assert (run.run_dir / "index.html").exists()


def test_parity_fails_when_backend_adds_noise_to_a_layer(run_suites, noisy_backend):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32:eager,noisy-layer:fp32:sdpa")

    result = run.result(
        backend="noisy-layer:fp32:sdpa",
        input="plain",
        suite="parity",
        check=("suites/test_parity.py::test_parity[llama-tiny/noisy-layer:fp32:sdpa/plain]"),
    )
    assert result["status"] == "fail"
    assert "first diverging module: model.layers.1 " in result["message"]
    assert result["metrics"]["first_divergent_module"] == "model.layers.1"
    assert result["margin"] < 0


def test_result_records_tolerance_and_margin(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:bf16:sdpa")
    result = run.result(check="suites/test_parity.py::test_parity[llama-tiny/eager:bf16:sdpa/plain]")

    assert result["thresholds"]["source"] == "table eager/bf16"
    assert result["thresholds"]["rtol"] > 0
    assert 0 < result["margin"] <= 1
    assert result["metrics"]["dtype"] == "bf16"
    assert result["environment"]["torch"]


def test_golden_check_skips_with_reason_when_no_reference(run_suites, tmp_path):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32:eager", "--references", str(tmp_path / "none"))
    result = run.result(
        suite="parity", check="suites/test_parity.py::test_parity_golden[llama-tiny/eager:fp32:eager/plain]"
    )

    assert result["status"] == "skip"
    assert "harness refs update" in result["message"]


def test_corrupt_golden_reference_is_reported_as_corrupt(run_suites, tmp_path):
    references = tmp_path / "refs"
    case = get_case("llama-tiny")
    tensor_path, metadata_path = reference_paths(references, case.id, reference_variant(case))
    tensor_path.parent.mkdir(parents=True)
    tensor_path.write_bytes(b"\x00\x01 not a safetensors file")
    metadata_path.write_text("{}")

    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32:eager", "--references", str(references))
    result = run.result(
        suite="parity", check="suites/test_parity.py::test_parity_golden[llama-tiny/eager:fp32:eager/plain]"
    )

    assert result["status"] == "error"
    assert "corrupt" in result["message"]
    assert str(tensor_path) in result["message"]


def test_golden_reference_drift_fails_and_names_versions(run_suites, tmp_path):
    import torch

    from harness.cli import main

    references = tmp_path / "refs"
    assert (
        main(
            [
                "refs",
                "update",
                "--cases",
                "llama-tiny",
                "--backends",
                "eager:fp32:eager",
                "--device",
                "cpu",
                "--references",
                str(references),
            ]
        )
        == 0
    )
    case = get_case("llama-tiny")
    tensor_path, _ = reference_paths(references, case.id, reference_variant(case))
    from safetensors.torch import load_file

    stored = load_file(str(tensor_path))["output_slice"]
    save_file({"output_slice": stored + 0.5 * torch.ones_like(stored)}, str(tensor_path))

    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32:eager", "--references", str(references))
    result = run.result(
        suite="parity", check="suites/test_parity.py::test_parity_golden[llama-tiny/eager:fp32:eager/plain]"
    )

    assert result["status"] == "fail"
    assert "drift from golden reference" in result["message"]
    assert "reference written with torch" in result["message"]


def test_unknown_case_is_one_line_usage_error(run_suites):
    run = run_suites("--cases", "melum-tiny")

    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    error_lines = [line for line in run.stderr.splitlines() if "melum-tiny" in line]
    assert len(error_lines) == 1
    assert error_lines[0].startswith("ERROR: unknown case 'melum-tiny'; closest known ids: mellum-tiny")
    assert error_lines[0].endswith("(see 'harness list cases')")


def test_unknown_suite_lists_known_suites(run_suites):
    run = run_suites("--cases", "llama-tiny", "--suites", "parity,fp17")

    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: unknown suite 'fp17'; known suites: parity" in run.stderr.splitlines()


def test_case_is_built_once_and_each_variant_prepared_once(run_suites, monkeypatch):
    import harness.session

    builds, prepares = [], []
    real_build = harness.session.build_case
    monkeypatch.setattr(harness.session, "build_case", lambda case: builds.append(case.id) or real_build(case))
    from harness.backends.eager import EagerBackend

    real_prepare = EagerBackend.prepare

    def counting_prepare(self, built, variant, device):
        prepares.append(variant.id)
        return real_prepare(self, built, variant, device)

    monkeypatch.setattr(EagerBackend, "prepare", counting_prepare)
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32,eager:bf16:sdpa")

    assert run.exit_code == pytest.ExitCode.OK
    assert builds == ["llama-tiny"]
    # The fp64 twin sets the noise floor; left padding sends it to sdpa (see HarnessSession).
    assert sorted(prepares) == sorted(
        ["eager:fp32:eager", "eager:fp32:sdpa", "eager:bf16:sdpa", "eager:fp64:eager", "eager:fp64:sdpa"]
    )


def test_build_failure_is_an_error_result_for_each_check(run_suites, tmp_path):
    case_file = tmp_path / "cases.toml"
    # 30 is not a multiple of 4 heads, so the model fails to build.
    case_file.write_text(
        '[[case]]\nid = "broken-llama"\nmodel_type = "llama"\n'
        "[case.config]\nhidden_size = 30\nnum_attention_heads = 4\n"
    )
    run = run_suites("--case-file", str(case_file), "--cases", "broken-llama", "--backends", "eager:fp32")
    results = run.results

    assert len(results) > 0
    assert set(results["status"]) == {"error"}
    assert all("building case 'broken-llama' failed" in message for message in results["message"])
