"""The compiled backend end to end: compile metrics, parity, compiled generation, planted faults."""

from __future__ import annotations

from tests.planted import CompiledNoisyLayerBackend, PerturbedCompiledBackend

SUITES = ("test_parity.py", "test_compile.py")


def test_compiled_fp32_passes_and_records_compile_metrics(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "compiled:fp32:default", suites=SUITES)
    results = run.results

    assert set(results[results["status"] != "skip"]["status"]) == {"pass"}
    new_length = run.result(
        check="suites/test_compile.py::test_compiled_new_length[llama-tiny/compiled:fp32:default/plain-24]"
    )
    metrics = new_length["metrics"]
    assert metrics["fullgraph"] is True
    assert metrics["graph_breaks"] == 0
    assert metrics["compile_s"] > 0
    assert metrics["recompiles_new_length"] >= 1
    assert metrics["attn_implementation"] == "sdpa"
    generation = run.result(
        check="suites/test_compile.py::test_compiled_generation[llama-tiny/compiled:fp32:default/plain]"
    )
    assert generation["metrics"]["decode_graphs"] >= 1
    assert generation["metrics"]["generated_tokens"] == 8


def test_parity_fails_when_compiled_graph_perturbs_logits(run_suites, registered):
    registered(PerturbedCompiledBackend(scale=1e-2))
    run = run_suites("--cases", "llama-tiny", "--backends", "perturbed-compiled", suites=("test_parity.py",))

    result = run.result(check="suites/test_parity.py::test_parity[llama-tiny/perturbed-compiled:fp32:default/plain]")
    assert result["status"] == "fail"
    assert "the compiled graph diverges: the same module run eagerly in fp32 is within tolerance" in result["message"]
    assert result["metrics"]["first_divergent_module"] == "<compiled graph>"
    assert result["margin"] < 0


def test_compiled_failure_localized_eagerly_when_module_diverges(run_suites, registered):
    registered(CompiledNoisyLayerBackend(module_name="model.layers.1"))
    run = run_suites("--cases", "llama-tiny", "--backends", "compiled-noisy-layer", suites=("test_parity.py",))

    result = run.result(check="suites/test_parity.py::test_parity[llama-tiny/compiled-noisy-layer:fp32:default/plain]")
    assert result["status"] == "fail"
    assert "the same module run eagerly in fp32 fails too, so compiling is not the cause" in result["message"]
    assert result["metrics"]["first_divergent_module"] == "model.layers.1"
