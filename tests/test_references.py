"""Golden reference files: round trip, and clear errors for missing, corrupt or stale files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.backends import Variant
from harness.cases import get_case
from harness.inputs import PLAIN
from harness.references import (
    GoldenReferenceError,
    GoldenReferenceMissing,
    describe_drift,
    read_reference,
    reference_paths,
    write_reference,
)

VARIANT = Variant("eager", "bf16", (("attn", "sdpa"),))
VERSIONS = {"torch": "2.13.0", "transformers": "5.25.0"}


@pytest.fixture
def written(tmp_path):
    case = get_case("llama-tiny")
    output = torch.randn(2, 16, 512)
    write_reference(tmp_path, case, VARIANT, PLAIN, output, VERSIONS)
    return tmp_path, case, output


def test_round_trip_keeps_the_slice_and_metadata(written):
    folder, case, output = written
    reference = read_reference(folder, case, VARIANT)

    assert torch.equal(reference.slice, output[:2, -4:, :128])
    assert reference.metadata["variant"] == "eager:bf16:sdpa"
    assert reference.metadata["config_hash"] == case.config_hash()
    assert reference.metadata["versions"] == VERSIONS
    assert reference.path.name == "eager_bf16_sdpa.safetensors"


def test_files_are_small(written):
    folder, case, _ = written
    tensor_path, metadata_path = reference_paths(folder, case.id, VARIANT)
    assert tensor_path.stat().st_size < 8192
    assert metadata_path.stat().st_size < 4096


def test_missing_reference_says_how_to_write_one(tmp_path):
    with pytest.raises(GoldenReferenceMissing, match="harness refs update --cases llama-tiny"):
        read_reference(tmp_path, get_case("llama-tiny"), VARIANT)


def test_truncated_tensor_file_is_corrupt(written):
    folder, case, _ = written
    tensor_path, _ = reference_paths(folder, case.id, VARIANT)
    tensor_path.write_bytes(tensor_path.read_bytes()[:40])
    with pytest.raises(GoldenReferenceError, match="is corrupt"):
        read_reference(folder, case, VARIANT)


def test_invalid_metadata_is_corrupt(written):
    folder, case, _ = written
    _, metadata_path = reference_paths(folder, case.id, VARIANT)
    metadata_path.write_text("{not json")
    with pytest.raises(GoldenReferenceError, match="not valid JSON"):
        read_reference(folder, case, VARIANT)


def test_one_file_of_the_pair_missing_is_an_error(written):
    folder, case, _ = written
    _, metadata_path = reference_paths(folder, case.id, VARIANT)
    metadata_path.unlink()
    with pytest.raises(GoldenReferenceError, match="missing although its companion exists"):
        read_reference(folder, case, VARIANT)


def test_reference_for_another_config_is_stale(written):
    folder, case, _ = written
    changed = dataclasses.replace(case, config_overrides={**case.config_overrides, "hidden_size": 32})
    with pytest.raises(GoldenReferenceError, match="was written for config hash"):
        read_reference(folder, changed, VARIANT)


def test_drift_message_names_writing_and_reading_versions(written):
    folder, case, _ = written
    reference = read_reference(folder, case, VARIANT)
    message = describe_drift(reference, {"torch": "2.14.0", "transformers": "5.26.0"})
    assert message == (
        "reference written with torch 2.13.0, transformers 5.25.0; read with torch 2.14.0, transformers 5.26.0"
    )
