"""Quantized backends end to end: weight integrity, coverage, MoE experts, planted quantizer faults."""

from __future__ import annotations

import pytest

from tests.planted import SplitWeightAtInitBackend, ZeroingQuantizerBackend

SUITES = ("test_parity.py", "test_quantization.py")
INTEGRITY = "suites/test_quantization.py::test_weight_integrity"


def test_int8_weight_only_passes_with_coverage(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "quantized-int8wo:fp32", suites=SUITES)
    results = run.results

    assert set(results[results["status"] != "skip"]["status"]) == {"pass"}
    through_transformers = run.result(check=f"{INTEGRITY}[llama-tiny/quantized-int8wo:fp32:transformers/plain]")
    coverage = through_transformers["metrics"]["coverage"]
    assert coverage["linear"]["quantized_fraction"] == 1.0
    assert coverage["lm_head"]["quantized_fraction"] == 0.0
    assert coverage["lm_head"]["kept_reasons"] == ["listed in the quantizer's modules_to_not_convert"]
    assert 0 < through_transformers["metrics"]["quantized_byte_fraction"] < 1
    assert 0 < through_transformers["metrics"]["size_ratio"] < 1


def test_direct_quantize_call_converts_output_projection(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "quantized-int8wo:fp32:direct", suites=SUITES)

    result = run.result(check=f"{INTEGRITY}[llama-tiny/quantized-int8wo:fp32:direct/plain]")
    assert result["status"] == "pass"
    assert result["metrics"]["coverage"]["lm_head"]["quantized_fraction"] == 1.0


def test_integrity_fails_when_quantizer_zeros_a_weight(run_suites, registered):
    registered(ZeroingQuantizerBackend(weight_name="model.layers.1.mlp.down_proj.weight"))
    run = run_suites("--cases", "llama-tiny", "--backends", "zeroing-quantizer", suites=SUITES)

    result = run.result(check=f"{INTEGRITY}[llama-tiny/zeroing-quantizer:fp32:transformers/plain]")
    assert result["status"] == "fail"
    assert "1 of 21 weights failed integrity" in result["message"]
    assert "model.layers.1.mlp.down_proj.weight: all zeros" in result["message"]


def test_integrity_fails_when_split_weight_stays_at_init(run_suites, registered):
    registered(SplitWeightAtInitBackend(module_name="model.layers.1.mlp.up_proj"))
    run = run_suites("--cases", "llama-tiny", "--backends", "split-weight-at-init", suites=SUITES)

    result = run.result(check=f"{INTEGRITY}[llama-tiny/split-weight-at-init:fp32:transformers/plain]")
    assert result["status"] == "fail"
    assert "model.layers.1.mlp.up_proj.weight: holds a freshly initialized value" in result["message"]
    assert result["metrics"]["problems"] == [
        problem for problem in result["metrics"]["problems"] if problem.startswith("model.layers.1.mlp.up_proj.weight")
    ]


def test_moe_experts_reported_left_in_float(run_suites):
    run = run_suites("--cases", "qwen3-moe-tiny", "--backends", "quantized-int8wo:fp32:transformers", suites=SUITES)

    result = run.result(check=f"{INTEGRITY}[qwen3-moe-tiny/quantized-int8wo:fp32:transformers/plain]")
    assert result["status"] == "pass"
    assert result["metrics"]["coverage"]["experts"]["quantized_fraction"] == 0.0
    assert "MoE experts stay in float" in result["message"]
    assert "fused 3-D tensors" in result["message"]


def test_conv1d_projections_left_in_float_fail(run_suites):
    run = run_suites("--cases", "gpt2-tiny", "--backends", "quantized-int8wo:fp32:transformers", suites=SUITES)

    result = run.result(check=f"{INTEGRITY}[gpt2-tiny/quantized-int8wo:fp32:transformers/plain]")
    assert result["status"] == "fail"
    assert "transformer.h.0.attn.c_attn.weight: left in float: a Conv1D linear layer" in result["message"]
    assert (run.run_dir / "index.html").read_text().count("Quantization coverage and weight integrity") == 1


def test_conversion_errors_read_from_load_report():
    from harness.backends.quantized import conversion_errors

    report = (
        "\x1b[1mSapiens2Model LOAD REPORT\x1b[0m from: /cache/sapiens2-tiny\n"
        "Key | Status |\n"
        "1D Tensors cannot be quantized per-axis\n"
        "Error: QuantoQuantize on tensors destined for model.layer.2.mlp.gate_proj.weight. Ckpt contains: 2\n"
    )

    assert conversion_errors(["unrelated warning", report]) == [
        "1D Tensors cannot be quantized per-axis "
        "(QuantoQuantize on tensors destined for model.layer.2.mlp.gate_proj.weight. Ckpt contains: 2)"
    ]


def test_library_frame_found_through_chained_errors():
    from harness.backends.quantized import raised_in_library

    def raise_from_torchao():
        exec(compile("raise ValueError('bad shape')", "/venv/site-packages/torchao/quant.py", "exec"))

    with pytest.raises(RuntimeError) as caught:
        try:
            raise_from_torchao()
        except ValueError as inner:
            raise RuntimeError("conversion failed") from inner

    assert raised_in_library(caught.value) == "torchao/quant.py:1"


def test_torchao_load_leaves_inductor_config_unchanged():
    import torch._inductor.config

    from harness.backends import Variant, get_backend
    from harness.cases import build_case, get_case

    built = build_case(get_case("llama-tiny"))
    before = torch._inductor.config.get_config_copy()

    get_backend("quantized-int8wo").prepare(built, Variant("quantized-int8wo", "fp32", (("path", "direct"),)), "cpu")

    after = torch._inductor.config.get_config_copy()
    assert {name for name in before if before[name] != after[name]} == set()
