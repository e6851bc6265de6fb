"""The compiled backend: ``torch.compile`` with inductor over the model ``from_pretrained`` returns.

Variants cover dtype (fp32, bf16, fp16) and compile mode (``default``, ``reduce-overhead``,
``max-autotune``), and ids read like ``compiled:bf16:default``. The model keeps the attention
and experts implementations Transformers picks by default (sdpa, and grouped_mm for MoE),
because that is what users compile. The metrics record which ones it used.

``prepare`` compiles the forward once and measures it: compile time, whether
``fullgraph=True`` succeeds (on failure it compiles again without it and counts graph
breaks), and how many graphs a second sequence length compiles. Inductor's on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``, by default a folder under the system's temporary directory)
serves later runs, so a warm run pays a fraction of the first run's compile time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._dynamo.utils import counters

from harness.backends.base import Backend, PreparedModel, Variant, timed
from harness.backends.eager import device_dtype_skip_reason, load_with_settings
from harness.cases import BuiltCase, Case
from harness.inputs import PLAIN, InputSpec, ModelInputs, build_inputs

log = logging.getLogger(__name__)

DTYPES = ("fp32", "bf16", "fp16")
MODES = ("default", "reduce-overhead", "max-autotune")
DEFAULT_MODE = "default"
# Dtypes of the variants `--backends compiled` runs, per device, all in the default mode.
# The other modes compile for longer and tune little on a CPU, where reduce-overhead's CUDA
# graphs do not apply. A cold CPU compile of a tiny case takes 8 to 20 s, and each variant
# compiles three times (forward, a second sequence length, the decode step), so CPU runs
# compile fp32 only.
DEFAULT_DTYPES = {"cpu": ("fp32",), "cuda": ("fp32", "bf16")}

# The input that makes a compiled forward see a new sequence length after PLAIN.
SECOND_LENGTH = InputSpec(name="plain-24", seq_len=24)


class CompiledBackend(Backend):
    name = "compiled"
    family = "compiled"
    description = "torch.compile (inductor) of the default model; variants over dtype and compile mode"

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, dtype, (("mode", mode),)) for dtype in DTYPES for mode in MODES]

    def default_variants(self, case: Case, device: str) -> list[Variant]:
        dtypes = DEFAULT_DTYPES.get(device, DEFAULT_DTYPES["cpu"])
        return [
            variant
            for variant in self.variants(case, device)
            if variant.setting("mode") == DEFAULT_MODE and variant.dtype in dtypes
        ]

    def skip_reason(self, case: Case, variant: Variant, device: str) -> str | None:
        return device_dtype_skip_reason(variant.torch_dtype, device)

    def function_to_compile(self, module: torch.nn.Module) -> Callable[..., Any]:
        """Return what ``torch.compile`` compiles: the module itself (planted faults wrap it)."""
        return module

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        with timed() as load_elapsed:
            module = load_with_settings(built, variant.torch_dtype, device)
        inputs = build_inputs(built.case.inputs, built.config, PLAIN, built.tokenizer)
        second = build_inputs(built.case.inputs, built.config, SECOND_LENGTH, built.tokenizer)
        runner, metrics = compile_and_measure(
            self.function_to_compile(module), variant, [inputs, second], device, variant.torch_dtype
        )
        metrics["attn_implementation"] = str(module.config._attn_implementation)
        experts = getattr(module.config, "_experts_implementation", None)
        if built.case.is_moe and experts is not None:
            metrics["experts_implementation"] = str(experts)
        log.info(
            "compiled %s %s in %.1f s (fullgraph %s, %d graph breaks)",
            built.case.id,
            variant.id,
            metrics["compile_s"],
            metrics["fullgraph"],
            metrics["graph_breaks"],
        )
        return PreparedModel(
            variant=variant,
            module=module,
            device=device,
            prepare_seconds=load_elapsed[0] + metrics["compile_s"],
            runner=runner,
            info={"compile": metrics},
        )


def compile_mode(variant: Variant) -> str | None:
    """Return the ``mode`` argument of ``torch.compile`` for a variant (None for the default mode)."""
    mode = variant.setting("mode", DEFAULT_MODE)
    return None if mode == DEFAULT_MODE else mode


def compile_and_measure(
    function: Callable[..., Any],
    variant: Variant,
    inputs: list[ModelInputs],
    device: str,
    dtype: torch.dtype,
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Compile ``function`` and run it on each input in turn; return the compiled callable and its metrics.

    The first input compiles the graph (``compile_s``); every later input has a new
    sequence length, so the graphs it compiles are recompiles for dynamic shapes. Dynamo's
    state is reset first: the counters are process-wide, and a previous variant's graphs
    would otherwise count against this one's recompile limit.
    """
    mode = compile_mode(variant)
    torch._dynamo.reset()
    counters.clear()
    metrics: dict[str, Any] = {}

    runner = torch.compile(function, mode=mode, fullgraph=True)
    with timed() as elapsed:
        try:
            _call(runner, inputs[0], device, dtype)
            metrics["fullgraph"] = True
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError) as error:
            metrics["fullgraph"] = False
            metrics["fullgraph_error"] = _first_line(error)
            torch._dynamo.reset()
            counters.clear()
            runner = torch.compile(function, mode=mode)
            _call(runner, inputs[0], device, dtype)
    metrics["compile_s"] = elapsed[0]
    metrics["graph_breaks"] = sum(counters["graph_break"].values())
    metrics["graphs"] = counters["stats"]["unique_graphs"]
    metrics["inductor_cache_hits"] = counters["inductor"]["fxgraph_cache_hit"]
    metrics["inductor_cache_misses"] = counters["inductor"]["fxgraph_cache_miss"]

    for later in inputs[1:]:
        before = counters["stats"]["unique_graphs"]
        with timed() as elapsed:
            _call(runner, later, device, dtype)
        metrics["recompiles_new_length"] = counters["stats"]["unique_graphs"] - before
        metrics["recompile_s"] = elapsed[0]
        metrics["input_shapes"] = [_shapes(item) for item in inputs]
    return runner, metrics


def _call(runner: Callable[..., Any], inputs: ModelInputs, device: str, dtype: torch.dtype) -> Any:
    with torch.inference_mode():
        return runner(**inputs.to(device, dtype))


def _shapes(inputs: ModelInputs) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in inputs.tensors.items()}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


# Tokens generated by the compiled generation check: enough decode steps to cross a few
# cache positions, few enough to keep the check to a couple of seconds once compiled.
GENERATED_TOKENS = 8


@dataclass
class CompiledGeneration:
    """Greedy generation through Transformers' compiled decode step with a static cache."""

    sequences: torch.Tensor
    # Logits of each generated token, (batch, generated tokens, vocabulary).
    logits: torch.Tensor
    seconds: float
    # Graphs compiled during generation, and whether generate took the compiled path at all.
    graphs: int
    graph_breaks: int
    compiled: bool


def generate_compiled(
    module: torch.nn.Module, inputs: ModelInputs, variant: Variant, device: str, new_tokens: int = GENERATED_TOKENS
) -> CompiledGeneration:
    """Generate greedily with a static cache, letting ``generate`` compile the decode step in the variant's mode."""
    from transformers import CompileConfig

    config = CompileConfig(mode=variant.setting("mode", DEFAULT_MODE), fullgraph=False)
    # generate() compiles only on accelerators unless this flag is set; Transformers 5.25
    # documents it on CompileConfig as the switch for compiling on CPU.
    config._compile_all_devices = True
    graphs_before = counters["stats"]["unique_graphs"]
    breaks_before = sum(counters["graph_break"].values())
    with timed() as elapsed:
        output = module.generate(
            **inputs.to(device, variant.torch_dtype),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            cache_implementation="static",
            compile_config=config,
            return_dict_in_generate=True,
            output_logits=True,
        )
    return CompiledGeneration(
        sequences=output.sequences.detach().cpu(),
        logits=torch.stack(output.logits, dim=1).detach().float().cpu(),
        seconds=elapsed[0],
        graphs=counters["stats"]["unique_graphs"] - graphs_before,
        graph_breaks=sum(counters["graph_break"].values()) - breaks_before,
        compiled=hasattr(module, "_compiled_call"),
    )
