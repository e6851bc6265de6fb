"""Memory figures of a prepared model: the bytes its weights take, and the peak while it runs.

On a CUDA device the peak is ``torch.cuda.max_memory_allocated`` over the measured call
(weights included, since they live on the device). On a CPU it is the growth of the
process's resident set above its size before the call, sampled every half millisecond
by a background thread. Weights loaded earlier are not part of it, and memory that the
allocator reuses from earlier calls does not show as growth.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import torch

_SAMPLE_INTERVAL_S = 0.0005


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    return library if hasattr(library, "malloc_trim") else None


_LIBC = _glibc()


def release_freed_memory() -> None:
    """Collect garbage, then hand the heap's free pages back to the operating system.

    glibc keeps freed memory in its heaps, so without ``malloc_trim`` the resident set
    only grows as models of different sizes are loaded and dropped one after another.
    Elsewhere (macOS, musl) only the garbage collection runs.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Return the bytes a tensor holds, adding up the inner tensors of a tensor subclass.

    Quantized weights (torchao, quanto) are tensor subclasses whose ``nbytes`` reports
    the logical float size; ``__tensor_flatten__`` names the tensors that hold the data.
    """
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = flatten()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(module: torch.nn.Module) -> int:
    """Return the bytes of a module's parameters and buffers, counting tied tensors once."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor_bytes(tensor)
    return total


@dataclass(frozen=True)
class PeakMemory:
    """The peak memory of one call, in bytes, and what the figure means on its device."""

    bytes: int
    kind: str


class _ResidentSetSampler(threading.Thread):
    """Record the largest resident set size seen while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._process = psutil.Process()
        self._stop_event = threading.Event()
        self.peak = self._process.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop_event.wait(_SAMPLE_INTERVAL_S)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._process.memory_info().rss)


def peak_memory(function: Callable[[], Any], device: str) -> PeakMemory:
    """Run ``function`` once and return its peak memory on ``device``."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        function()
        torch.cuda.synchronize()
        return PeakMemory(bytes=int(torch.cuda.max_memory_allocated()), kind="CUDA max allocated")

    before = psutil.Process().memory_info().rss
    sampler = _ResidentSetSampler()
    sampler.start()
    try:
        function()
    finally:
        peak = sampler.stop()
    return PeakMemory(bytes=max(peak - before, 0), kind="resident set growth")
