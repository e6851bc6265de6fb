"""Record every module's output during a forward, and find where two runs first diverge.

Hooks fire when a module's forward returns, so records are in completion order: a
layer's children come before the layer. The first record that diverges beyond tolerance
is therefore the innermost module where an error appeared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from harness.probes.compare import select_valid


@dataclass
class ModuleOutput:
    """One module call's output, copied to the CPU in float32."""

    name: str
    class_name: str
    call_index: int
    tensor: torch.Tensor

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.call_index)


@dataclass(frozen=True)
class Divergence:
    """The first module whose output left tolerance, with its error values."""

    module: str
    class_name: str
    call_index: int
    max_abs_error: float
    reference_max_abs: float
    ratio: float

    def describe(self) -> str:
        call = f" (call {self.call_index})" if self.call_index else ""
        return (
            f"first diverging module: {self.module}{call} [{self.class_name}], max abs error "
            f"{self.max_abs_error:.3g} against reference max |x| {self.reference_max_abs:.3g} "
            f"({self.ratio:.3g}x its tolerance)"
        )


def first_float_tensor(value: Any) -> torch.Tensor | None:
    """Return the first floating tensor in a module output (tensor, tuple or ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_float_tensor(item)
            if found is not None:
                return found
    return None


@contextmanager
def recording_module_outputs(module: torch.nn.Module) -> Iterator[list[ModuleOutput]]:
    """Record the outputs of ``module``'s submodules during the block."""
    records: list[ModuleOutput] = []
    calls: Counter[str] = Counter()

    def make_hook(name: str) -> Callable[..., None]:
        def hook(submodule: torch.nn.Module, args: Any, output: Any) -> None:
            tensor = first_float_tensor(output)
            if tensor is None:
                return
            records.append(
                ModuleOutput(
                    name, type(submodule).__name__, calls[name], tensor.detach().to("cpu", torch.float32).clone()
                )
            )
            calls[name] += 1

        return hook

    handles = [submodule.register_forward_hook(make_hook(name)) for name, submodule in module.named_modules() if name]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _valid_view(tensor: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return tensor
    if tensor.dim() >= 2 and tuple(tensor.shape[:2]) == tuple(valid.shape):
        return select_valid(tensor, valid)
    # MoE blocks flatten (batch, position) into one token axis.
    if tensor.dim() >= 1 and tensor.shape[0] == valid.numel():
        return tensor[valid.reshape(-1)]
    return tensor


def first_divergence(
    reference: list[ModuleOutput],
    candidate: list[ModuleOutput],
    *,
    atol: float,
    rtol: float,
    valid: torch.Tensor | None = None,
) -> Divergence | None:
    """Return the first candidate record that differs from the reference beyond tolerance.

    A module diverges when max |x - r| > atol + rtol * max |r| over its output, or when
    the candidate is non-finite where the reference is finite. Records are matched by
    (module name, call index); modules only one run has are ignored.
    """
    by_key = {record.key: record for record in reference}
    for record in candidate:
        match = by_key.get(record.key)
        if match is None or match.tensor.shape != record.tensor.shape:
            continue
        x = _valid_view(record.tensor, valid).double()
        r = _valid_view(match.tensor, valid).double()
        if x.numel() == 0:
            continue
        reference_max = float(r.abs().max()) if torch.isfinite(r).all() else float("nan")
        finite_reference = torch.isfinite(r)
        new_nonfinite = bool((finite_reference & ~torch.isfinite(x)).any())
        difference = (x - r).abs()[finite_reference & torch.isfinite(x)]
        error = float(difference.max()) if difference.numel() else 0.0
        allowed = atol + rtol * (reference_max if reference_max == reference_max else 0.0)
        if new_nonfinite:
            ratio = float("inf")
        elif allowed > 0:
            ratio = error / allowed
        else:
            ratio = float("inf") if error > 0 else 0.0
        if ratio > 1.0:
            return Divergence(
                module=record.name,
                class_name=record.class_name,
                call_index=record.call_index,
                max_abs_error=float("inf") if new_nonfinite else error,
                reference_max_abs=reference_max,
                ratio=ratio,
            )
    return None


def locate_divergence(
    reference_module: torch.nn.Module,
    candidate_module: torch.nn.Module,
    run_reference: Callable[[], Any],
    run_candidate: Callable[[], Any],
    *,
    atol: float,
    rtol: float,
    valid: torch.Tensor | None = None,
) -> Divergence | None:
    """Run both models with every module recorded; return where the candidate first diverges."""
    with recording_module_outputs(reference_module) as reference_records:
        run_reference()
    with recording_module_outputs(candidate_module) as candidate_records:
        run_candidate()
    return first_divergence(reference_records, candidate_records, atol=atol, rtol=rtol, valid=valid)
