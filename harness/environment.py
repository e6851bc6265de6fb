"""The environment a run measured: library versions, device, processor."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata
from typing import Any

import torch

# Distributions whose versions decide numerics or which backends exist.
LIBRARIES = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "torchao",
    "bitsandbytes",
    "optimum-quanto",
    "lm_eval",
    "gguf",
    "numpy",
)


def resolve_device(requested: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``; validate the rest."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}; use cpu, cuda or auto")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use --device cpu or auto")
    return requested


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"device": device, "cpu": cpu_name(), "threads": torch.get_num_threads()}
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=properties.name,
            gpu_count=torch.cuda.device_count(),
            compute_capability=f"{properties.major}.{properties.minor}",
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return info


def collect_environment(device: str) -> dict[str, Any]:
    """Return versions and device facts for the run header and every result."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        **device_info(device),
        "versions": library_versions(),
    }


def result_environment(environment: dict[str, Any]) -> dict[str, Any]:
    """Return the compact subset stored on every result row."""
    versions = environment.get("versions", {})
    return {
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
        "device": environment.get("device"),
        "device_name": environment.get("gpu") or environment.get("cpu"),
    }
