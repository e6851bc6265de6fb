"""The eager backend: dtypes through from_pretrained, settings applied, rejections as skips."""

from __future__ import annotations

import pytest
import torch

from harness.backends import Variant, VariantSkipped
from harness.backends.eager import EagerBackend, float64_variant, reference_variant
from harness.cases import build_case, get_case


@pytest.fixture(scope="module")
def built_llama():
    return build_case(get_case("llama-tiny"))


def test_reference_is_fp32_eager_math():
    assert reference_variant(get_case("llama-tiny")).id == "eager:fp32:eager"
    assert reference_variant(get_case("olmoe-tiny")).id == "eager:fp32:eager:eager"
    assert float64_variant(get_case("olmoe-tiny")).id == "eager:fp64:eager:eager"


def test_prepare_applies_dtype_and_attention(built_llama):
    prepared = EagerBackend().prepare(built_llama, Variant("eager", "bf16", (("attn", "sdpa"),)), "cpu")

    assert prepared.module.dtype == torch.bfloat16
    assert prepared.module.config._attn_implementation == "sdpa"
    assert not prepared.module.training


def test_prepare_applies_experts_implementation():
    built = build_case(get_case("olmoe-tiny"))
    variant = Variant("eager", "fp32", (("attn", "eager"), ("experts", "batched_mm")))
    prepared = EagerBackend().prepare(built, variant, "cpu")
    assert prepared.module.config._experts_implementation == "batched_mm"


def test_rejected_setting_becomes_a_skip_with_the_library_message(built_llama):
    variant = Variant("eager", "fp32", (("attn", "flash_attention_2"),))
    with pytest.raises(VariantSkipped, match="llama rejects"):
        EagerBackend().prepare(built_llama, variant, "cpu")
