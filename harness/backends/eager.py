"""The eager PyTorch backend: the model as ``from_pretrained`` returns it, in a chosen dtype.

Variants cover dtype (fp32, bf16, fp16), ``attn_implementation`` (eager, sdpa) and, for
MoE cases, ``experts_implementation`` (eager, batched_mm, grouped_mm). The live reference
is this backend's ``fp32`` variant with eager attention and eager experts: plain PyTorch
math with no fused kernel.
"""

from __future__ import annotations

import logging
import re

import torch

from harness.backends.base import Backend, PreparedModel, Variant, VariantSkipped, timed
from harness.cases import BuiltCase, Case, load_model

log = logging.getLogger(__name__)

DTYPES = ("fp32", "bf16", "fp16")
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
EXPERTS_IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")

# Messages with which Transformers rejects a setting a model does not support; a variant
# rejected this way, or by an ImportError (a kernel package that is not installed), is
# skipped with the message as its reason. Anything else is an error.
_UNSUPPORTED_SETTING = re.compile(
    r"does not support|not supported|is not available|requires|only supports|cannot be used", re.I
)


def reference_variant(case: Case) -> Variant:
    """Return the variant every other variant of ``case`` is compared with."""
    return _eager_variant(case, "fp32", "eager", "eager")


def float64_variant(case: Case) -> Variant:
    """Return the fp64 variant whose output sets the reference's noise floor."""
    return _eager_variant(case, "fp64", "eager", "eager")


def _eager_variant(case: Case, dtype: str, attention: str, experts: str) -> Variant:
    settings = [("attn", attention)]
    if case.is_moe:
        settings.append(("experts", experts))
    return Variant("eager", dtype, tuple(settings))


def cpu_supports_dtype(dtype: torch.dtype) -> bool:
    """Return whether a small matmul in ``dtype`` runs on this CPU."""
    try:
        torch.ones(2, 2, dtype=dtype) @ torch.ones(2, 2, dtype=dtype)
    except RuntimeError:
        return False
    return True


def device_dtype_skip_reason(dtype: torch.dtype, device: str) -> str | None:
    """Return why ``dtype`` cannot run on ``device``, or None."""
    if device == "cpu" and not cpu_supports_dtype(dtype):
        return f"{dtype} matmul is not supported by this CPU build of torch {torch.__version__}"
    if device == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return f"bf16 is not supported on {torch.cuda.get_device_name()}"
    return None


class EagerBackend(Backend):
    name = "eager"
    family = "eager"
    description = "the model as from_pretrained returns it; variants over dtype, attention and experts kernels"

    def variants(self, case: Case, device: str) -> list[Variant]:
        experts = EXPERTS_IMPLEMENTATIONS if case.is_moe else ("eager",)
        return [
            _eager_variant(case, dtype, attention, expert)
            for dtype in DTYPES
            for attention in ATTENTION_IMPLEMENTATIONS
            for expert in experts
        ]

    def skip_reason(self, case: Case, variant: Variant, device: str) -> str | None:
        return device_dtype_skip_reason(variant.torch_dtype, device)

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        kwargs = {"attn_implementation": variant.setting("attn", "eager")}
        if variant.setting("experts") is not None:
            kwargs["experts_implementation"] = variant.setting("experts")
        with timed() as elapsed:
            module = load_with_settings(built, variant.torch_dtype, device, **kwargs)
        return PreparedModel(variant=variant, module=module, device=device, prepare_seconds=elapsed[0])


def load_with_settings(built: BuiltCase, dtype: torch.dtype, device: str, **kwargs: str) -> torch.nn.Module:
    """Load the case, turning Transformers' rejection of a setting into a skip with its message."""
    try:
        return load_model(built, dtype, device, **kwargs)
    except (ValueError, NotImplementedError, ImportError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, ImportError) or _UNSUPPORTED_SETTING.search(message):
            raise VariantSkipped(f"{built.case.model_type} rejects {kwargs}: {message}") from error
        raise
