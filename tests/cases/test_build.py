"""Building and loading: dtypes through from_pretrained, packages, the GGUF checkpoint."""

from __future__ import annotations

import pytest
import torch

from harness.cases import get_case
from harness.cases.build import build_case, load_model, package_file


def test_fp16_load_keeps_declared_fp32_modules(tmp_path):
    built = build_case(get_case("t5-tiny"), tmp_path)
    model = load_model(built, torch.float16)

    wo = model.encoder.block[0].layer[1].DenseReluDense.wo.weight
    assert wo.dtype == torch.float32
    assert model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16


def test_deepseek_router_weight_stays_fp32_in_bf16(tmp_path):
    built = build_case(get_case("deepseek-v2-tiny"), tmp_path)
    model = load_model(built, torch.bfloat16)

    assert model.model.layers[1].mlp.gate.weight.dtype == torch.float32
    assert model.model.layers[1].self_attn.o_proj.weight.dtype == torch.bfloat16


def test_missing_package_names_the_package():
    with pytest.raises(FileNotFoundError, match="package 'no_such_package_xyz' is not installed"):
        package_file("no_such_package_xyz/model")


def test_minilm_loads_from_its_package(tmp_path):
    built = build_case(get_case("minilm-l6"), tmp_path)

    assert built.parameter_count == 22_713_216
    assert built.tokenizer is not None
    assert built.config.model_type == "bert"


def test_smollm2_gguf_is_converted_once_to_safetensors(tmp_path):
    built = build_case(get_case("smollm2-135m"), tmp_path)
    folder = built.folder

    assert (folder / "model.safetensors").exists()
    assert not list(folder.glob("*.gguf"))
    assert built.tokenizer is not None
    assert built.parameter_count > 100_000_000
    assert "quantization_config" not in built.config.to_dict()

    again = build_case(get_case("smollm2-135m"), tmp_path)
    assert again.folder == folder
