"""The backend registry and variant selectors."""

from __future__ import annotations

import pytest

from harness.backends import (
    UnknownBackendError,
    get_backend,
    load_backends,
    register_backend,
    select_variants,
    unregister_backend,
)
from harness.backends.eager import EagerBackend
from harness.cases import get_case
from tests.planted import NoisyLayerBackend


def ids(selector, case_id="llama-tiny"):
    return [variant.id for _, variant in select_variants(selector, get_case(case_id), "cpu")]


def test_eager_is_registered_through_its_entry_point():
    assert isinstance(load_backends()["eager"], EagerBackend)


def test_dense_case_has_dtype_by_attention_variants():
    assert ids("eager") == [
        "eager:fp32:eager",
        "eager:fp32:sdpa",
        "eager:bf16:eager",
        "eager:bf16:sdpa",
        "eager:fp16:eager",
        "eager:fp16:sdpa",
    ]


def test_moe_case_adds_experts_implementations():
    variants = ids("eager:bf16:sdpa", "mixtral-tiny")
    assert variants == ["eager:bf16:sdpa:eager", "eager:bf16:sdpa:batched_mm", "eager:bf16:sdpa:grouped_mm"]


def test_selector_matches_whole_segments():
    assert ids("eager:fp16") == ["eager:fp16:eager", "eager:fp16:sdpa"]
    assert ids("eager:fp1") == []


def test_unknown_backend_names_closest():
    with pytest.raises(UnknownBackendError, match="unknown backend 'eagr'; closest: eager"):
        get_backend("eagr")


def test_registered_backend_is_selectable():
    backend = NoisyLayerBackend()
    register_backend(backend)
    try:
        assert ids("noisy-layer:fp32") == ["noisy-layer:fp32:eager", "noisy-layer:fp32:sdpa"]
    finally:
        unregister_backend(backend.name)
    with pytest.raises(UnknownBackendError):
        ids("noisy-layer")
