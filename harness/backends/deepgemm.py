"""The DeepGEMM experts backend: MoE cases in bf16 with Transformers' ``deepgemm`` experts kernel.

The kernel comes from the ``kernels`` package and runs on Hopper and Blackwell GPUs only;
elsewhere every variant is skipped with the reason Transformers gives. Numerically it is an
eager bf16 variant, so it shares the eager family's tolerances.
"""

from __future__ import annotations

from harness.backends.base import PreparedModel, Variant, timed
from harness.backends.eager import EagerBackend, load_with_settings
from harness.cases import BuiltCase, Case


class DeepGemmExpertsBackend(EagerBackend):
    name = "deepgemm"
    family = "eager"
    description = "MoE experts through DeepGEMM's grouped bf16 matmul (Hopper or Blackwell GPUs)"

    def variants(self, case: Case, device: str) -> list[Variant]:
        if not case.is_moe:
            return []
        return [Variant(self.name, "bf16", (("attn", "sdpa"),))]

    def unavailable_reason(self, device: str) -> str | None:
        if device != "cuda":
            return "DeepGEMM experts run on CUDA GPUs only (Hopper SM90 or Blackwell SM100)"
        from transformers.integrations.deepgemm import is_deepgemm_loadable

        try:
            is_deepgemm_loadable(raise_error=True)
        except ImportError as error:
            return str(error).strip().splitlines()[0]
        return None

    def skip_reason(self, case: Case, variant: Variant, device: str) -> str | None:
        return self.unavailable_reason(device)

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        with timed() as elapsed:
            module = load_with_settings(
                built,
                variant.torch_dtype,
                device,
                attn_implementation=variant.setting("attn", "sdpa"),
                experts_implementation="deepgemm",
            )
        return PreparedModel(variant=variant, module=module, device=device, prepare_seconds=elapsed[0])
