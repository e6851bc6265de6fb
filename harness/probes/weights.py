"""Weight integrity of a quantized model against the float model it was loaded from.

Every floating-point parameter of the float model is looked up in the quantized model and
given one outcome. It is quantized, with its dequantized value within the scheme's bound of
the float value, or kept in float on purpose, with the reason. Otherwise it is a problem.
It is missing, or left in float although it is a linear layer's weight the scheme should
convert, or all zeros. It may contain a freshly initialized value instead of the
checkpoint's, or lie further from the float value than the scheme allows. Coverage sums
parameters and bytes per module kind.

Dequantization knows the tensor types of torchao (``TorchAOBaseTensor``), bitsandbytes
(``Int8Params``, ``Params4bit``) and optimum-quanto (``QTensor``). The weight of a linear
layer in any other integer or float8 format is read off the layer's output for the identity
matrix. Any other tensor in such a format counts as quantized, but its value is not checked,
and the record says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.tolerances import EPSILON

KINDS = ("linear", "lm_head", "experts", "embedding", "conv", "norm", "other")

# Quantizers clamp their scales at float32's epsilon (torchao's choose_qparams defaults to it),
# so a weight smaller than that quantizes to zero. Errors are relative to max |w| or this floor.
_SCALE_FLOOR = torch.finfo(torch.float32).eps

# A weight whose cosine similarity with the checkpoint's value is this close to 0 carries none
# of the checkpoint: a freshly initialized tensor is independent of it. A correct quantized
# weight has a cosine above 0.99 even at 4 bits.
_UNCORRELATED_COSINE = 0.2


@dataclass
class WeightRecord:
    """The outcome for one float parameter of the float model in the quantized model."""

    name: str
    kind: str
    numel: int
    float_bytes: int
    stored_bytes: int = 0
    quantized: bool = False
    # max |dequantized - float| / max |float|, and the scheme's bound for it.
    error: float | None = None
    bound: float | None = None
    kept_reason: str = ""
    problem: str = ""


@dataclass
class KindCoverage:
    """Parameters and bytes of one module kind, and how many of them are quantized."""

    parameters: int = 0
    quantized_parameters: int = 0
    float_bytes: int = 0
    stored_bytes: int = 0
    quantized_float_bytes: int = 0
    kept_reasons: set[str] = field(default_factory=set)

    @property
    def quantized_fraction(self) -> float:
        return self.quantized_parameters / self.parameters if self.parameters else 0.0

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["kept_reasons"] = sorted(self.kept_reasons)
        values["quantized_fraction"] = self.quantized_fraction
        return values


@dataclass
class IntegrityReport:
    """Every float parameter's record, with coverage per module kind."""

    records: list[WeightRecord]

    @property
    def problems(self) -> list[WeightRecord]:
        return [record for record in self.records if record.problem]

    def coverage(self) -> dict[str, KindCoverage]:
        by_kind: dict[str, KindCoverage] = {}
        for record in self.records:
            kind = by_kind.setdefault(record.kind, KindCoverage())
            kind.parameters += record.numel
            kind.float_bytes += record.float_bytes
            kind.stored_bytes += record.stored_bytes
            if record.quantized:
                kind.quantized_parameters += record.numel
                kind.quantized_float_bytes += record.float_bytes
            elif record.kept_reason:
                kind.kept_reasons.add(record.kept_reason)
        return {kind: by_kind[kind] for kind in KINDS if kind in by_kind}

    def totals(self) -> dict[str, float]:
        """Return the quantized fraction of parameters and of float bytes, and the size against the float model."""
        parameters = sum(record.numel for record in self.records)
        float_bytes = sum(record.float_bytes for record in self.records)
        stored_bytes = sum(record.stored_bytes for record in self.records)
        quantized = sum(record.numel for record in self.records if record.quantized)
        quantized_bytes = sum(record.float_bytes for record in self.records if record.quantized)
        return {
            "quantized_parameter_fraction": quantized / parameters if parameters else 0.0,
            "quantized_byte_fraction": quantized_bytes / float_bytes if float_bytes else 0.0,
            "size_ratio": stored_bytes / float_bytes if float_bytes else 0.0,
        }


def module_kind(float_model: torch.nn.Module, module_name: str, parameter: torch.Tensor) -> str:
    """Classify a parameter by the float model's module that owns it."""
    from transformers.pytorch_utils import Conv1D

    module = float_model.get_submodule(module_name)
    output_embeddings = getattr(float_model, "get_output_embeddings", lambda: None)()
    if output_embeddings is not None and module is output_embeddings:
        return "lm_head"
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return "conv"
    if parameter.dim() >= 3:
        return "experts"
    if isinstance(module, (torch.nn.Linear, Conv1D)):
        return "linear"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    if "norm" in type(module).__name__.lower():
        return "norm"
    return "other"


def _is_linear_weight(float_model: torch.nn.Module, module_name: str, attribute: str) -> bool:
    from transformers.pytorch_utils import Conv1D

    return attribute == "weight" and isinstance(float_model.get_submodule(module_name), (torch.nn.Linear, Conv1D))


def dequantize(tensor: torch.Tensor, owner: torch.nn.Module | None = None) -> torch.Tensor | None:
    """Return a quantized tensor's float value, or None for a plain float tensor.

    ``owner`` is the module holding the tensor: bitsandbytes moves an int8 weight's scales
    from the weight to its module's state at the first forward. Raises TypeError for a
    tensor stored in a quantized dtype of a type this module cannot dequantize.
    """
    try:
        from torchao.utils import TorchAOBaseTensor
    except ImportError:
        TorchAOBaseTensor = ()  # noqa: N806 - stands in for the class when torchao is absent
    if TorchAOBaseTensor and isinstance(tensor, TorchAOBaseTensor):
        return tensor.dequantize()

    bitsandbytes = _optional("bitsandbytes")
    if bitsandbytes is not None:
        if isinstance(tensor, bitsandbytes.nn.Params4bit):
            if getattr(tensor.quant_state, "packing_format_for_cpu", False) and owner is not None:
                # The first CPU forward repacks the weight into a kernel layout that
                # dequantize_4bit does not read, and unpacking it through state_dict() changes
                # some weights (bitsandbytes 0.50.2), so the layer itself is asked for its weight.
                return weight_applied_by(owner)
            return bitsandbytes.functional.dequantize_4bit(tensor.data, tensor.quant_state)
        if isinstance(tensor, bitsandbytes.nn.Int8Params):
            scales = _int8_scales(tensor, owner)
            if scales is None:
                raise TypeError("cannot dequantize an Int8Params weight whose row scales (SCB) are not set")
            return tensor.data.float() * scales.float().unsqueeze(1) / 127.0

    quanto = _optional("optimum.quanto")
    if quanto is not None and isinstance(tensor, quanto.QTensor):
        return tensor.dequantize()

    if tensor.is_floating_point() and tensor.element_size() >= 2:
        return None
    if isinstance(owner, torch.nn.Linear):
        return weight_applied_by(owner)
    raise TypeError(f"cannot dequantize a {type(tensor).__name__} stored as {tensor.dtype}")


def weight_applied_by(linear: torch.nn.Linear) -> torch.Tensor:
    """Return the weight a linear layer applies, read off its output for the identity matrix.

    The identity's rows are exact in every activation format (their absolute maximum is 1),
    so the output is the weight the layer's own kernel applies, rounded to the compute dtype.
    """
    bias = linear.bias
    dtype = bias.dtype if bias is not None and bias.is_floating_point() else _compute_dtype(linear)
    device = next((tensor.device for tensor in linear.parameters()), torch.device("cpu"))
    identity = torch.eye(linear.in_features, dtype=dtype, device=device)
    with torch.no_grad():
        output = linear(identity)
    if bias is not None:
        output = output - bias
    return output.t().float()


def _compute_dtype(linear: torch.nn.Linear) -> torch.dtype:
    dtype = getattr(linear, "compute_dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _int8_scales(tensor: torch.Tensor, owner: torch.nn.Module | None) -> torch.Tensor | None:
    scales = getattr(tensor, "SCB", None)
    if scales is None and owner is not None:
        scales = getattr(getattr(owner, "state", None), "SCB", None)
    return scales


def stored_bytes(tensor: torch.Tensor, owner: torch.nn.Module | None = None) -> int:
    """Return the bytes a (possibly quantized) tensor holds, its scales and zero points included."""
    bitsandbytes = _optional("bitsandbytes")
    if bitsandbytes is not None:
        if isinstance(tensor, bitsandbytes.nn.Params4bit):
            state = tensor.quant_state
            return _plain_bytes(tensor.data) + (_plain_bytes(state.absmax) if state is not None else 0)
        if isinstance(tensor, bitsandbytes.nn.Int8Params):
            scales = _int8_scales(tensor, owner)
            return _plain_bytes(tensor.data) + (_plain_bytes(scales) if scales is not None else 0)
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(stored_bytes(getattr(tensor, name)) for name in names)
    return _plain_bytes(tensor)


def _plain_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _optional(module_name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


def _find(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, torch.nn.Module] | None:
    """Return the tensor called ``name`` in ``model`` and the module that owns it."""
    module_name, _, attribute = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    value = getattr(module, attribute, None)
    return (value, module) if isinstance(value, torch.Tensor) else None


def inspect_weights(
    float_model: torch.nn.Module,
    quantized_model: torch.nn.Module,
    *,
    label: str,
    bound: float,
    dtype: str,
    not_converted: Iterable[str] = (),
    converts_conv1d: bool = False,
    initializer_std: float | None = None,
) -> IntegrityReport:
    """Compare every float parameter of ``float_model`` with its counterpart in ``quantized_model``.

    ``label`` names the scheme in messages; ``bound`` is its weight error bound (see
    :class:`harness.backends.quantized.Scheme`), to which the rounding of ``dtype``, the
    dtype the quantized model was loaded in, is added. ``not_converted`` is the
    quantizer's ``modules_to_not_convert``: weights there are kept in float on purpose.
    """
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.quantizers_utils import should_convert_module

    patterns = list(not_converted)
    allowed = bound * (1.0 + EPSILON[dtype]) + EPSILON[dtype]
    records: list[WeightRecord] = []
    for name, parameter in float_model.named_parameters(remove_duplicate=False):
        if not parameter.is_floating_point():
            continue
        module_name, _, attribute = name.rpartition(".")
        kind = module_kind(float_model, module_name, parameter)
        record = WeightRecord(name=name, kind=kind, numel=parameter.numel(), float_bytes=_plain_bytes(parameter.data))
        records.append(record)

        located = _find(quantized_model, name)
        if located is None:
            record.problem = "missing from the quantized model"
            continue
        found, owner = located
        record.stored_bytes = stored_bytes(found, owner)
        try:
            value = dequantize(found, owner)
        except TypeError as error:
            record.quantized = True
            record.kept_reason = f"value not checked: {error}"
            continue

        reference = parameter.detach().to("cpu", torch.float64)
        float_module = float_model.get_submodule(module_name)
        if value is not None:
            record.quantized = True
            record.bound = allowed
            # bitsandbytes replaces a Conv1D by a Linear, whose weight is the transpose.
            transposed = isinstance(float_module, Conv1D) and not isinstance(owner, Conv1D)
            value = _oriented(value.detach().to("cpu", torch.float64), reference, transposed)
            if value is None:
                record.problem = f"dequantized shape {tuple(found.shape)} does not fit the float shape"
                continue
            record.error = _relative_error(value, reference)
            if not record.error <= allowed:
                record.problem = _diagnose(value, reference, record.error, allowed, label, initializer_std)
            continue

        value = found.detach().to("cpu", torch.float64)
        floating_allowed = EPSILON.get(_dtype_name(found.dtype), EPSILON["fp32"])
        record.error = _relative_error(value, reference) if value.shape == reference.shape else math.inf
        if not record.error <= floating_allowed:
            record.problem = _diagnose(
                value, reference, record.error, floating_allowed, "a float copy", initializer_std
            )
            continue
        # Quantizers match modules_to_not_convert against module names ("wo" matches T5's
        # "...DenseReluDense.wo"), so the module name is what is looked up.
        if _is_linear_weight(float_model, module_name, attribute) and kind == "linear":
            if not should_convert_module(module_name, patterns):
                record.kept_reason = "listed in the quantizer's modules_to_not_convert"
            elif isinstance(float_module, Conv1D) and not converts_conv1d:
                record.problem = (
                    f"left in float: a Conv1D linear layer, which {label} does not convert (it converts nn.Linear only)"
                )
            else:
                record.problem = f"left in float although {label} converts this linear layer"
        elif kind == "lm_head":
            record.kept_reason = (
                "listed in the quantizer's modules_to_not_convert"
                if not should_convert_module(module_name, patterns)
                else "output embeddings kept in float"
            )
        elif kind == "experts":
            record.kept_reason = f"fused 3-D experts parameter: {label} converts 2-D linear weights only"
        else:
            record.kept_reason = f"{kind} parameters are not weight-quantized"
    return IntegrityReport(records)


def _oriented(value: torch.Tensor, reference: torch.Tensor, transposed: bool) -> torch.Tensor | None:
    """Return ``value`` in the float tensor's layout, or None when it does not fit."""
    if transposed and value.dim() == 2:
        value = value.t()
    if value.shape == reference.shape:
        return value
    if value.numel() == reference.numel():
        return value.reshape(reference.shape)
    return None


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Return max |value - reference| / max(max |reference|, the scale floor)."""
    if not reference.numel():
        return 0.0
    difference = float((value - reference).abs().max())
    if not math.isfinite(difference):
        return math.inf
    return difference / max(float(reference.abs().max()), _SCALE_FLOOR)


def _diagnose(
    value: torch.Tensor,
    reference: torch.Tensor,
    error: float,
    allowed: float,
    label: str,
    initializer_std: float | None,
) -> str:
    """Say how a weight that is off differs from the checkpoint: zeroed, at its initial value, or just far."""
    if not torch.isfinite(value).all():
        return "holds non-finite values"
    if not value.any():
        return f"all zeros, where the checkpoint's weight has max |w| {float(reference.abs().max()):.3g}"
    if value.numel() > 1 and bool((value == value.flatten()[0]).all()):
        return (
            f"every element is {float(value.flatten()[0]):.4g}, a constant initial value, not the checkpoint's weight"
        )
    cosine = float(torch.nn.functional.cosine_similarity(value.flatten(), reference.flatten(), dim=0))
    if abs(cosine) < _UNCORRELATED_COSINE:
        spread = f"std {float(value.std()):.3g}"
        if initializer_std is not None:
            spread += f", the initializer's std is {initializer_std:.3g}"
        return (
            f"holds a freshly initialized value, not the checkpoint's: cosine similarity {cosine:.3f} "
            f"with the checkpoint's weight ({spread})"
        )
    return f"max |error| / max |w| is {error:.3g}, beyond the {allowed:.3g} that {label} allows"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(
        dtype, "fp32"
    )


def initializer_std(config: Any) -> float | None:
    """Return the std Transformers' default ``_init_weights`` draws linear weights with, when the config sets one."""
    for name in ("initializer_range", "init_std", "initializer_factor"):
        value = getattr(config, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    text_config = getattr(config, "get_text_config", lambda: None)()
    value = getattr(text_config, "initializer_range", None) if text_config is not None else None
    return float(value) if isinstance(value, (int, float)) else None
