"""Golden reference files: write, read, compare, and explain drift across library versions.

A golden reference is a small safetensors file (a fixed slice of one variant's output on
the plain input) and a JSON file of metadata (library versions, config hash, seed, summary
statistics of the whole output). Both formats hold data only, so reading a reference
cannot run code. Layout: ``<folder>/<case id>/<variant id with ':' as '_'>.safetensors``
and ``.json`` beside it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.backends import Variant
from harness.cases import Case
from harness.inputs import InputSpec

SLICE_TENSOR = "output_slice"
FORMAT_VERSION = 1

# The stored slice: the first rows, the last positions, the first features. Enough to
# catch drift, small enough to commit (about 4 KiB per file).
_SLICE_ROWS = 2
_SLICE_POSITIONS = 4
_SLICE_FEATURES = 128


class GoldenReferenceMissing(Exception):
    """No golden reference exists for a (case, variant); the message says how to write one."""


class GoldenReferenceError(Exception):
    """A golden reference that cannot be read or does not fit the case; the message says which file and why."""


@dataclass
class GoldenReference:
    """A stored slice of one variant's output and the metadata it was written with."""

    slice: torch.Tensor
    metadata: dict[str, Any]
    path: Path


def reference_paths(folder: Path, case_id: str, variant: Variant) -> tuple[Path, Path]:
    stem = variant.id.replace(":", "_")
    base = folder / case_id
    return base / f"{stem}.safetensors", base / f"{stem}.json"


def output_slice(output: torch.Tensor) -> torch.Tensor:
    """Cut the stored slice from a full output: rows, last positions, first features."""
    tensor = output.detach().float().cpu()
    if tensor.dim() >= 3:
        tensor = tensor[:_SLICE_ROWS, -_SLICE_POSITIONS:, :_SLICE_FEATURES]
    elif tensor.dim() == 2:
        tensor = tensor[:_SLICE_ROWS, :_SLICE_FEATURES]
    return tensor.contiguous()


def summary_statistics(output: torch.Tensor) -> dict[str, float]:
    values = output.detach().double().cpu()
    return {
        "mean": float(values.mean()),
        "std": float(values.std()) if values.numel() > 1 else 0.0,
        "abs_max": float(values.abs().max()),
    }


def write_reference(
    folder: Path,
    case: Case,
    variant: Variant,
    spec: InputSpec,
    output: torch.Tensor,
    versions: dict[str, str],
) -> Path:
    """Write the golden reference of (case, variant); return the safetensors path."""
    tensor_path, metadata_path = reference_paths(folder, case.id, variant)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({SLICE_TENSOR: output_slice(output)}, str(tensor_path))
    metadata = {
        "format_version": FORMAT_VERSION,
        "case": case.id,
        "variant": variant.id,
        "config_hash": case.config_hash(),
        "seed": case.seed,
        "input": {"name": spec.name, "batch_size": spec.batch_size, "seq_len": spec.seq_len, "seed": spec.seed},
        "output_shape": list(output.shape),
        "statistics": summary_statistics(output),
        "versions": {name: versions.get(name) for name in ("torch", "transformers")},
    }
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tensor_path


def read_reference(folder: Path, case: Case, variant: Variant) -> GoldenReference:
    """Read the golden reference of (case, variant).

    Raises GoldenReferenceMissing when there is none, GoldenReferenceError when a file is
    corrupt or was written for a different config of the case.
    """
    tensor_path, metadata_path = reference_paths(folder, case.id, variant)
    if not tensor_path.exists() and not metadata_path.exists():
        raise GoldenReferenceMissing(
            f"no golden reference for {case.id} {variant.id} in {folder}; "
            f"write one with 'harness refs update --cases {case.id}'"
        )
    for path in (tensor_path, metadata_path):
        if not path.exists():
            raise GoldenReferenceError(f"golden reference {path} is missing although its companion exists; rewrite it")

    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GoldenReferenceError(f"golden reference {metadata_path} is corrupt: not valid JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise GoldenReferenceError(f"golden reference {metadata_path} is corrupt: expected a JSON object")

    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise GoldenReferenceError(f"golden reference {tensor_path} is corrupt: {error}") from None
    if SLICE_TENSOR not in tensors:
        raise GoldenReferenceError(f"golden reference {tensor_path} is corrupt: no tensor named {SLICE_TENSOR!r}")
    stored = tensors[SLICE_TENSOR]
    if not torch.isfinite(stored).all() and metadata.get("statistics", {}).get("abs_max") not in (None, math.inf):
        raise GoldenReferenceError(f"golden reference {tensor_path} is corrupt: it holds non-finite values")

    if metadata.get("config_hash") != case.config_hash():
        raise GoldenReferenceError(
            f"golden reference {metadata_path} was written for config hash {metadata.get('config_hash')}, "
            f"but case {case.id} now hashes to {case.config_hash()}; rewrite it with "
            f"'harness refs update --cases {case.id}'"
        )
    return GoldenReference(slice=stored, metadata=metadata, path=tensor_path)


def describe_drift(reference: GoldenReference, versions: dict[str, str]) -> str:
    """Say which library versions wrote the reference and which read it now."""
    written = reference.metadata.get("versions", {})
    names = ("torch", "transformers")
    before = ", ".join(f"{name} {written.get(name)}" for name in names)
    now = ", ".join(f"{name} {versions.get(name)}" for name in names)
    text = f"reference written with {before}; read with {now}"
    if all(written.get(name) == versions.get(name) for name in names):
        text += " (same versions: the machine or the case changed)"
    return text
