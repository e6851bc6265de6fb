"""Record the value range of every module during a forward: float16 headroom and the first non-finite value.

Forward hooks record, per module call, the range of its output and of its primary input
(the first floating positional argument, usually the hidden states). Headroom is the
float16 maximum (65504) divided by the largest |value| a module handled, so a headroom
below 1 means float16 cannot represent the value. Outputs always count. Inputs count for
norms, poolers and projections, because those inputs are often computed in a parent's own
code (residual sums, gated products), which no module returns.

Records are in completion order, as in :mod:`harness.probes.activations`: a layer's
children come before the layer, so the first record that turned non-finite is the
innermost module where the overflow appeared.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.probes.activations import first_float_tensor

FP16_MAX = float(torch.finfo(torch.float16).max)

Kind = Literal["norm", "pooler", "projection", "other"]
# Kinds whose inputs count towards headroom.
INPUT_WATCHED: frozenset[str] = frozenset({"norm", "pooler", "projection"})

_PROJECTION_TYPES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
# Keyword arguments that carry the hidden states when a module is called without positional ones.
_HIDDEN_KWARGS = ("hidden_states", "inputs_embeds", "pixel_values", "input_features", "input", "x")


def module_kind(module: torch.nn.Module) -> Kind:
    """Classify a module as a norm, a pooler, a projection, or other, by its type and class name."""
    name = type(module).__name__
    if "Norm" in name:
        return "norm"
    if "Pool" in name:
        return "pooler"
    # Transformers' GPT-2 Conv1D and wrappers such as Gemma4ClippableLinear are projections too.
    if isinstance(module, _PROJECTION_TYPES) or name.endswith(("Linear", "Conv1D")):
        return "projection"
    return "other"


@dataclass(frozen=True)
class TensorRange:
    """The range of one tensor: its dtype, finite min and max, max |value| and non-finite count."""

    dtype: str
    min: float
    max: float
    nonfinite: int
    numel: int

    @property
    def max_abs(self) -> float:
        """Return the largest finite |value|, or infinity when any value is non-finite."""
        if self.nonfinite:
            return math.inf
        return max(abs(self.min), abs(self.max))

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0

    def describe(self) -> str:
        text = f"[{self.min:.3g}, {self.max:.3g}] ({self.dtype})"
        if self.nonfinite:
            text += f", {self.nonfinite} of {self.numel} values non-finite"
        return text


def tensor_range(tensor: torch.Tensor) -> TensorRange:
    """Measure ``tensor``; min and max cover its finite values only."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tensor.numel() == 0:
        return TensorRange(dtype, 0.0, 0.0, 0, 0)
    low, high = (float(value) for value in torch.aminmax(tensor.detach()))
    if math.isfinite(low) and math.isfinite(high):
        return TensorRange(dtype, low, high, 0, tensor.numel())

    finite_mask = torch.isfinite(tensor)
    nonfinite = int((~finite_mask).sum())
    finite = tensor[finite_mask]
    if finite.numel() == 0:
        return TensorRange(dtype, math.nan, math.nan, nonfinite, tensor.numel())
    low, high = (float(value) for value in torch.aminmax(finite))
    return TensorRange(dtype, low, high, nonfinite, tensor.numel())


@dataclass
class ModuleRange:
    """One module call: the ranges of its primary input and first floating output.

    ``entered`` and ``exited`` are positions in one sequence of hook events, so a record
    can tell which modules were still running when another module was entered.
    """

    name: str
    class_name: str
    kind: Kind
    call_index: int
    entered: int
    input: TensorRange | None = None
    output: TensorRange | None = None
    exited: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.call_index)

    @property
    def label(self) -> str:
        name = self.name or "(model)"
        return f"{name} (call {self.call_index})" if self.call_index else name

    def counted(self, dtypes: frozenset[str]) -> list[tuple[str, TensorRange]]:
        """Return the tensors of this call that count towards headroom: those in one of ``dtypes``.

        ``dtypes`` are the run's low-precision dtypes. Tensors in another dtype (float32
        inside a float16 run, from modules kept in float32 or from upcasts) cannot
        overflow float16 where they are, so they do not count.
        """
        tensors = []
        if self.output is not None and self.output.dtype in dtypes:
            tensors.append(("output", self.output))
        if self.kind in INPUT_WATCHED and self.input is not None and self.input.dtype in dtypes:
            tensors.append(("input", self.input))
        return tensors


@dataclass(frozen=True)
class Headroom:
    """The float16 headroom of one module call: FP16_MAX / max |value| of the tensor that limits it."""

    module: str
    class_name: str
    call_index: int
    headroom: float
    max_abs: float
    tensor: str
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "class": self.class_name,
            "call": self.call_index,
            "headroom": self.headroom,
            "max_abs": self.max_abs,
            "tensor": self.tensor,
            "dtype": self.dtype,
        }


def headroom_of(record: ModuleRange, dtypes: frozenset[str]) -> Headroom | None:
    """Return a call's headroom over its counted tensors, or None when none counts."""
    counted = record.counted(dtypes)
    if not counted:
        return None
    tensor, limiting = max(counted, key=lambda item: item[1].max_abs)
    max_abs = limiting.max_abs
    if math.isinf(max_abs):
        headroom = 0.0
    elif max_abs == 0:
        headroom = math.inf
    else:
        headroom = FP16_MAX / max_abs
    return Headroom(record.name, record.class_name, record.call_index, headroom, max_abs, tensor, limiting.dtype)


def headroom_by_module(records: Iterable[ModuleRange], dtypes: frozenset[str]) -> list[Headroom]:
    """Return the headroom of every call with counted tensors, in completion order."""
    found = (headroom_of(record, dtypes) for record in sorted(records, key=_completion))
    return [headroom for headroom in found if headroom is not None]


def lowest_headroom(records: Iterable[ModuleRange], dtypes: frozenset[str], count: int = 3) -> list[Headroom]:
    """Return the ``count`` distinct modules with the lowest headroom, lowest first.

    One tensor is often seen several times: a norm's output is the input of the
    projections after it, and a parent returns its last child's output unchanged. Calls
    with the same max |value| are taken for the same tensor and listed once, under the
    module that completed first (the one that made it). Repeated calls of one module are
    listed once, at their lowest.
    """
    chosen: list[Headroom] = []
    for headroom in sorted(headroom_by_module(records, dtypes), key=lambda item: item.headroom):
        if any(item.module == headroom.module or item.max_abs == headroom.max_abs for item in chosen):
            continue
        chosen.append(headroom)
        if len(chosen) == count:
            break
    return chosen


def _completion(record: ModuleRange) -> int:
    return record.exited if record.exited is not None else record.entered


@dataclass(frozen=True)
class NonFinite:
    """The place where a run first produced a non-finite value.

    ``module`` made the value: either its output was non-finite while its input was
    finite, or (``seen_entering`` set) the value was first seen entering a submodule of
    ``module`` and so was made by ``module``'s own code between its submodules. ``input``
    is the range of ``module``'s own primary input; ``reference_output`` the range the
    float32 run gave at the same place, when known.
    """

    module: str
    class_name: str
    call_index: int
    input: TensorRange | None
    output: TensorRange | None
    seen_entering: str | None = None
    reference_output: TensorRange | None = None
    missing_from_reference: bool = False

    def describe(self) -> str:
        name = self.module or "(model)"
        call = f" (call {self.call_index})" if self.call_index else ""
        text = f"first non-finite module: {name}{call} [{self.class_name}]"
        if self.seen_entering is not None:
            text += f", in its own code (first seen entering {self.seen_entering})"
        elif self.output is not None:
            text += f", output {self.output.describe()}"
        text += f"; its inputs {self.input.describe()}" if self.input is not None else "; no floating input"
        if self.reference_output is not None:
            text += f"; fp32 output there is finite, max |x| {self.reference_output.max_abs:.3g}"
        elif self.missing_from_reference:
            text += "; the fp32 reference has no module of that name"
        return text


def first_nonfinite(records: list[ModuleRange], reference: Iterable[ModuleRange] | None = None) -> NonFinite | None:
    """Return where ``records`` first turned non-finite where ``reference`` stayed finite, or None.

    Without a reference every non-finite value counts. With one, records are matched by
    (module name, call index). A place where the reference was non-finite too is skipped,
    and a module that the reference lacks counts.
    """
    by_key = {record.key: record for record in reference} if reference is not None else None
    events: list[tuple[int, ModuleRange, str]] = []
    for record in records:
        if record.input is not None and not record.input.finite:
            events.append((record.entered, record, "input"))
        if record.output is not None and not record.output.finite and record.exited is not None:
            events.append((record.exited, record, "output"))

    for _, record, where in sorted(events, key=lambda event: event[0]):
        match = by_key.get(record.key) if by_key is not None else None
        if match is not None:
            reference_range = match.input if where == "input" else match.output
            if reference_range is not None and not reference_range.finite:
                continue
        if where == "output":
            if record.input is not None and not record.input.finite:
                continue  # its input was already non-finite: an earlier event names the maker
            return NonFinite(
                record.name,
                record.class_name,
                record.call_index,
                record.input,
                record.output,
                reference_output=match.output if match is not None else None,
                missing_from_reference=by_key is not None and match is None,
            )
        maker = _running_at(records, record)
        if maker is None:
            return NonFinite(record.name, record.class_name, record.call_index, record.input, None)
        maker_match = by_key.get(maker.key) if by_key is not None else None
        return NonFinite(
            maker.name,
            maker.class_name,
            maker.call_index,
            maker.input,
            maker.output,
            seen_entering=record.label,
            reference_output=maker_match.output if maker_match is not None else None,
            missing_from_reference=by_key is not None and maker_match is None,
        )
    return None


def _running_at(records: list[ModuleRange], entering: ModuleRange) -> ModuleRange | None:
    """Return the innermost module call that was running when ``entering`` was entered."""
    running = [
        record
        for record in records
        if record.entered < entering.entered and (record.exited is None or record.exited > entering.entered)
    ]
    return max(running, key=lambda record: record.entered, default=None)


def primary_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    """Return the tensor a module works on: its first floating positional argument, else the hidden-states keyword.

    Masks and position embeddings come as further arguments and are left out on purpose,
    because a mask contains the dtype's minimum and would read as zero headroom.
    """
    for value in args:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value
    for name in _HIDDEN_KWARGS:
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value
    return None


@dataclass
class RangeRecording:
    """The records of one instrumented forward, in the order modules were entered."""

    records: list[ModuleRange] = field(default_factory=list)

    def by_completion(self) -> list[ModuleRange]:
        return sorted(self.records, key=_completion)


@contextmanager
def recording_ranges(module: torch.nn.Module) -> Iterator[RangeRecording]:
    """Record the range of every module call of ``module`` (itself included) during the block."""
    recording = RangeRecording()
    calls: Counter[str] = Counter()
    running: list[ModuleRange] = []
    clock = iter(range(1 << 62))

    def make_hooks(name: str) -> tuple[Any, Any]:
        def before(submodule: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            tensor = primary_input(args, kwargs)
            record = ModuleRange(
                name=name,
                class_name=type(submodule).__name__,
                kind=module_kind(submodule),
                call_index=calls[name],
                entered=next(clock),
                input=tensor_range(tensor) if tensor is not None else None,
            )
            calls[name] += 1
            recording.records.append(record)
            running.append(record)

        def after(submodule: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            record = _pop_running(running, name)
            if record is None:
                return
            tensor = first_float_tensor(output)
            record.output = tensor_range(tensor) if tensor is not None else None
            record.exited = next(clock)

        return before, after

    handles = []
    for name, submodule in module.named_modules():
        before, after = make_hooks(name)
        handles.append(submodule.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(submodule.register_forward_hook(after, with_kwargs=True))
    try:
        yield recording
    finally:
        for handle in handles:
            handle.remove()


def _pop_running(running: list[ModuleRange], name: str) -> ModuleRange | None:
    """Remove and return the innermost running call of ``name`` (normally the last one entered)."""
    for index in range(len(running) - 1, -1, -1):
        if running[index].name == name:
            return running.pop(index)
    return None
