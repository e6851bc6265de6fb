"""The backend protocol: a backend turns a built case into a prepared model for one variant."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from harness.cases import BuiltCase, Case
from harness.inputs import ModelInputs

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}


@dataclass(frozen=True, order=True)
class Variant:
    """A backend's settings that matter for numerics; ``id`` reads like ``eager:bf16:sdpa``.

    ``settings`` keeps the backend's own order, so that ids are stable and readable.
    """

    backend: str
    dtype: str
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return ":".join([self.backend, self.dtype, *(value for _, value in self.settings)])

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def setting(self, name: str, default: str | None = None) -> str | None:
        return dict(self.settings).get(name, default)

    def as_dict(self) -> dict[str, str]:
        return {"backend": self.backend, "dtype": self.dtype, **dict(self.settings)}

    def __str__(self) -> str:
        return self.id


class VariantSkipped(Exception):
    """Raised by ``prepare`` when a variant cannot run here; the message is the reason."""


@dataclass
class PreparedModel:
    """A model ready to run one variant of one case.

    ``module`` is the plain ``nn.Module`` that instrumentation hooks attach to; ``runner``
    is what a forward calls (the module itself, or a compiled wrapper around it).
    """

    variant: Variant
    module: torch.nn.Module
    device: str
    prepare_seconds: float
    runner: Callable[..., Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def forward(self, inputs: ModelInputs) -> Any:
        call = self.runner if self.runner is not None else self.module
        with torch.inference_mode():
            return call(**inputs.to(self.device, self.variant.torch_dtype))


@contextmanager
def timed() -> Iterator[list[float]]:
    """Measure the block's wall time; the elapsed seconds land in the yielded list."""
    elapsed: list[float] = []
    started = time.perf_counter()
    yield elapsed
    elapsed.append(time.perf_counter() - started)


class Backend(abc.ABC):
    """How a model is executed. Subclasses register under the ``harness.backends`` entry-point group."""

    name: ClassVar[str]
    # The tolerance table is keyed by family: variants of one family share tolerances.
    family: ClassVar[str]
    description: ClassVar[str] = ""

    def unavailable_reason(self, device: str) -> str | None:
        """Return why this backend cannot run on ``device`` at all, or None when it can."""
        return None

    @abc.abstractmethod
    def variants(self, case: Case, device: str) -> list[Variant]:
        """Return every variant that applies to ``case`` (including ones skipped on this device)."""

    def default_variants(self, case: Case, device: str) -> list[Variant]:
        """Return the variants a selector naming only this backend (or its family) picks.

        A backend whose variants are costly (compile modes, quantization schemes in several
        dtypes) keeps the expensive ones out of this list. A selector that names a dtype or
        a setting still reaches them.
        """
        return self.variants(case, device)

    def skip_reason(self, case: Case, variant: Variant, device: str) -> str | None:
        """Return why ``variant`` of ``case`` cannot run on ``device``, or None when it can."""
        return self.unavailable_reason(device)

    @abc.abstractmethod
    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        """Load and prepare the model; raise VariantSkipped when this variant cannot run here."""
