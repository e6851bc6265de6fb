"""Tensor comparison metrics shared by the suites.

All metrics are computed in float64 on the positions that carry real tokens. For outputs
over a vocabulary (logits), top-1 agreement and the KL divergence of the next-token
distributions are computed too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OutputComparison:
    """How far an output is from its reference.

    ``max_abs_error`` is elementwise; it is judged against the reference's own scale
    (``reference_max_abs``), because whole-model outputs have elements near zero whose
    relative error says nothing. ``rmse_vs_float64`` and ``noise_floor_rmse`` follow PyTorch's dynamo benchmark
    accuracy gate: the variant's RMSE against a float64 run, next to the fp32 reference's
    own RMSE against that run.
    """

    numel: int
    nonfinite: int
    reference_max_abs: float
    max_abs_error: float
    rmse: float
    relative_rmse: float
    cosine: float
    rmse_vs_float64: float | None = None
    noise_floor_rmse: float | None = None
    top1_agreement: float | None = None
    kl_divergence: float | None = None

    def as_metrics(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


def primary_output(outputs: Any) -> torch.Tensor:
    """Return the tensor a model's output is judged by: logits, else the last hidden state."""
    for name in ("logits", "last_hidden_state", "prediction_logits", "pooler_output"):
        value = getattr(outputs, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(outputs, torch.Tensor):
        return outputs
    # A ModelOutput is a mapping; one without the names above (CLIP's logits_per_image, a
    # vocoder's waveform) is judged by its first floating tensor.
    values = outputs.values() if isinstance(outputs, Mapping) else outputs
    if isinstance(outputs, (tuple, list, Mapping)):
        for value in values:
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value
            # A backbone's feature_maps: the last stage is the one its users read.
            if isinstance(value, (tuple, list)) and value and isinstance(value[-1], torch.Tensor):
                return value[-1]
    raise TypeError(f"cannot find a tensor output in {type(outputs).__name__}")


def has_vocabulary_logits(outputs: Any) -> bool:
    return isinstance(getattr(outputs, "logits", None), torch.Tensor) and outputs.logits.dim() == 3


def select_valid(tensor: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Keep the (batch, position) entries marked valid; leave other shapes whole."""
    if valid is None or tensor.dim() < 2 or tuple(tensor.shape[:2]) != tuple(valid.shape):
        return tensor
    return tensor[valid.to(tensor.device)]


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((a - b) ** 2)))


def compare_outputs(
    output: torch.Tensor,
    reference: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    float64_reference: torch.Tensor | None = None,
    vocabulary: bool = False,
) -> OutputComparison:
    """Compare ``output`` with ``reference`` on the valid positions."""
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} differs from reference shape {tuple(reference.shape)}")
    x = select_valid(output.detach(), valid).to("cpu", torch.float64)
    r = select_valid(reference.detach(), valid).to("cpu", torch.float64)

    nonfinite = int((~torch.isfinite(x)).sum())
    difference = (x - r).abs()
    finite_difference = torch.where(torch.isfinite(difference), difference, torch.full_like(difference, math.inf))
    reference_rms = float(torch.sqrt(torch.mean(r**2)))
    cosine = float(torch.nn.functional.cosine_similarity(x.flatten(), r.flatten(), dim=0)) if x.numel() else 1.0

    fields: dict[str, Any] = {
        "numel": x.numel(),
        "nonfinite": nonfinite,
        "reference_max_abs": float(r.abs().max()) if r.numel() else 0.0,
        "max_abs_error": float(finite_difference.max()) if x.numel() else 0.0,
        "rmse": _rmse(x, r),
        "relative_rmse": _rmse(x, r) / reference_rms if reference_rms > 0 else 0.0,
        "cosine": cosine if math.isfinite(cosine) else -1.0,
    }
    if float64_reference is not None:
        exact = select_valid(float64_reference.detach(), valid).to("cpu", torch.float64)
        fields["rmse_vs_float64"] = _rmse(x, exact)
        fields["noise_floor_rmse"] = _rmse(r, exact)
    if vocabulary:
        x = x.reshape(-1, x.shape[-1])
        r = r.reshape(-1, r.shape[-1])
        fields["top1_agreement"] = float((x.argmax(-1) == r.argmax(-1)).double().mean())
        fields["kl_divergence"] = next_token_kl(x, r)
    return OutputComparison(**fields)


def next_token_kl(logits: torch.Tensor, reference_logits: torch.Tensor) -> float:
    """Return the mean KL(reference || output) of the softmax distributions, in nats."""
    reference_log_probs = torch.log_softmax(reference_logits.double(), dim=-1)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    kl = torch.sum(reference_log_probs.exp() * (reference_log_probs - log_probs), dim=-1)
    value = float(kl.mean())
    return value if math.isfinite(value) else math.inf
