"""Stress profiles: edits that bring a tiny random model to the activation magnitudes of large checkpoints.

Tiny seeded weights keep every activation near 1, so the float16 overflows that trained
checkpoints hit never show by themselves. A profile plans a few edits on the float32
reference: scale a parameter, replace a buffer, or multiply a module's output. It measures
them so that a chosen tensor reaches a target magnitude. The suite then applies the same
edits to every variant, so float16, bfloat16 and float32 run the same stressed weights.

Scale factors are powers of two, so scaling is exact in every float format. Profiles:

``entry-scale``
    Multiplies the output of the model's entry module (the first module with
    parameters to run: the token embedding of a text model, the patch or convolution
    embedding of a vision or audio encoder) by the power of two that brings its max
    |value| nearest to 4096 (2^12) in float32. Why: trained language models carry a
    few activations far larger than the rest, up to about 100,000 times ("Massive
    Activations in Large Language Models", Sun et al. 2024, arXiv:2402.17762). 4096
    leaves 16x headroom at the entry, so a module that amplifies the stream beyond
    the 4x margin warns, and one that squares or sums it in float16 overflows. The
    output is scaled rather than the weight, so a tied language-model head keeps its
    scale.
``keep-in-fp32``
    For models whose ``from_pretrained(dtype=torch.float16)`` keeps parameters in
    float32 (``_keep_in_fp32_modules``: T5's ``wo``; ``_keep_in_fp32_modules_strict``:
    the DeepSeek router's ``gate.weight``), scales those parameters until their
    modules' outputs reach at least OVERFLOW_TARGET (about 1.2x the float16 maximum)
    in float32. Why: Transformers keeps these modules in float32 so that weights
    trained in bfloat16 do not overflow or lose precision in float16 (its comments
    point at flan-t5-xxl). The profile pushes them past the float16 range, so a run
    shows whether the model stays finite on the library's load path and whether
    ``.half()``, which ignores the declarations, breaks it.
``gemma4-vision-pooler``
    For Gemma 4 vision towers: scales the gain of the last encoder layer's
    ``post_feedforward_layernorm`` (whose output is added into the encoder output)
    until the pooler's output, after its sqrt(hidden_size) scaling, reaches at least
    OVERFLOW_TARGET in float32. When the vision config standardizes, it also sets
    ``std_bias`` to the per-channel mean of those features (limited to
    +-STD_BIAS_LIMIT) and ``std_scale`` to 1 / their per-channel RMS around it, as a
    trained checkpoint carries them. Why: Transformers v5.10.1 (pull request #46277)
    moved this scaling to float32 because the pooled features of the 26B and 31B
    checkpoints overflowed float16 after it; the magnitudes here are theirs. A case
    needs the production vision width (1152, scale 33.9) for the scaling to matter.
    Without ``standardize`` (the default, and the E-series checkpoints), the library
    casts the float32 features to the working dtype unchanged, so float16 overflows
    there under this profile.

Profiles apply to tiny cases only: a checkpoint's own weights set its magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness.probes.headroom import FP16_MAX, ModuleRange

BASELINE = "none"
ENTRY_TARGET = 2.0**12
# About 1.2x the float16 maximum. In a float16 run of Gemma 4 26B, the vision pooler's input
# reached max |x| 2330, which sqrt(1152) = 33.9 scales to about 7.9e4 (reported in
# unslothai/unsloth-zoo pull request #931).
OVERFLOW_TARGET = 80_000.0
# The std_bias of trained Gemma 4 checkpoints fits float16: the largest values reported for
# gemma-4-31B are about -5.4e4 (vllm-project/vllm issue #40290). A planned std_bias stays
# below that, so that loading it in float16 does not itself overflow.
STD_BIAS_LIMIT = 2.0**15


@dataclass(frozen=True)
class WeightEdit:
    """One edit: multiply a parameter or buffer by ``factor``, replace it by ``values``, or multiply a module's output.

    ``target`` names a parameter or buffer (``model.embed_tokens.weight``) or, with
    ``scales_output``, a module whose output is multiplied by ``factor``.
    """

    target: str
    factor: float | None = None
    values: torch.Tensor | None = field(default=None, compare=False)
    scales_output: bool = False

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.target} replaced"
        what = f"output of {self.target}" if self.scales_output else self.target
        return f"{what} x {_power_of_two(self.factor or 1.0)}"


@dataclass(frozen=True)
class StressPlan:
    """The edits a profile chose for one case and their effect in float32; ``skipped`` is the reason for no edits."""

    profile: str
    edits: tuple[WeightEdit, ...] = ()
    summary: str = ""
    skipped: str | None = None
    # What the profile scales and why, copied into results so that the report needs no torch.
    rationale: str = ""

    def describe(self) -> str:
        if self.skipped:
            return f"{self.profile}: not applied ({self.skipped})"
        if not self.edits:
            return f"{self.profile}: weights as built"
        return f"{self.profile}: {self.summary}"


@dataclass
class Measurement:
    """A float32 run with edits applied: every module's range, and one module's output on request."""

    records: list[ModuleRange]
    captured: torch.Tensor | None = None


@dataclass
class PlanningContext:
    """The inputs of planning: the float32 reference, its unedited records, and a way to measure edits."""

    model: torch.nn.Module
    source: str
    baseline: list[ModuleRange]
    measure: Callable[[Sequence[WeightEdit], str | None], Measurement]
    kept_in_fp32: Callable[[], frozenset[str]]


@dataclass(frozen=True)
class StressProfile:
    name: str
    description: str
    default: bool
    planner: Callable[[PlanningContext], StressPlan]

    def plan(self, context: PlanningContext) -> StressPlan:
        if context.source != "tiny":
            plan = StressPlan(self.name, skipped="a checkpoint's own weights set its magnitudes")
        else:
            plan = self.planner(context)
        return replace(plan, rationale=self.description)


class EditNotApplicable(Exception):
    """Raised when a plan names a parameter, buffer or module that a prepared model does not have."""


@contextmanager
def applied(model: torch.nn.Module, edits: Sequence[WeightEdit]) -> Iterator[None]:
    """Apply ``edits`` to ``model`` for the block, then restore every tensor exactly and remove every hook.

    Output scales are forward hooks registered before any hook the block adds, so a
    recorder inside the block records the scaled output.
    """
    targets = [_resolve(model, edit) for edit in edits]
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = []
    try:
        with torch.no_grad():
            for edit, target in zip(edits, targets, strict=True):
                if isinstance(target, torch.nn.Module):
                    handles.append(target.register_forward_hook(_output_scaler(edit.factor or 1.0)))
                    continue
                saved.append((target, target.detach().clone()))
                target.copy_(_edited(target, edit))
        yield
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for target, original in saved:
                target.copy_(original)


def _resolve(model: torch.nn.Module, edit: WeightEdit) -> torch.Tensor | torch.nn.Module:
    try:
        if edit.scales_output:
            return model.get_submodule(edit.target)
        module_name, _, attribute = edit.target.rpartition(".")
        owner = model.get_submodule(module_name)
    except AttributeError:
        raise EditNotApplicable(f"{type(model).__name__} has no module for {edit.target!r}") from None
    tensor = getattr(owner, attribute, None)
    if not isinstance(tensor, torch.Tensor):
        raise EditNotApplicable(f"{type(model).__name__} has no parameter or buffer {edit.target!r}")
    return tensor


def _edited(tensor: torch.Tensor, edit: WeightEdit) -> torch.Tensor:
    if edit.values is not None:
        return edit.values.to(tensor.device, tensor.dtype).reshape(tensor.shape)
    return (tensor.float() * (edit.factor or 1.0)).to(tensor.dtype)


def _output_scaler(factor: float) -> Callable[..., Any]:
    def scale(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output * factor
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (output[0] * factor, *output[1:])
        return output

    return scale


def power_of_two_factor(current: float, target: float, *, at_least: bool = False) -> float:
    """Return the power of two that brings ``current`` nearest to ``target`` (or to at least ``target``)."""
    if current <= 0 or not math.isfinite(current):
        raise ValueError(f"cannot scale a max |value| of {current!r} to {target:g}; the tensor is zero or non-finite")
    exponent = math.log2(target / current)
    return 2.0 ** (math.ceil(exponent) if at_least else round(exponent))


def _power_of_two(factor: float) -> str:
    exponent = math.log2(factor) if factor > 0 else math.nan
    return f"2^{exponent:.0f}" if exponent == round(exponent) else f"{factor:.4g}"


def _by_completion(records: list[ModuleRange]) -> list[ModuleRange]:
    return sorted(records, key=lambda record: record.exited if record.exited is not None else record.entered)


def _max_output(records: list[ModuleRange], names: set[str]) -> float:
    values = [record.output.max_abs for record in records if record.name in names and record.output is not None]
    return max(values, default=0.0)


# entry-scale


def plan_entry_scale(context: PlanningContext) -> StressPlan:
    """Scale the output of the first module with parameters to run, to a max |value| of about ENTRY_TARGET."""
    modules = dict(context.model.named_modules())
    for record in _by_completion(context.baseline):
        module = modules.get(record.name)
        if module is None or next(module.parameters(recurse=False), None) is None:
            continue
        if record.output is None or not record.output.finite or record.output.max_abs == 0:
            continue
        factor = power_of_two_factor(record.output.max_abs, ENTRY_TARGET)
        edit = WeightEdit(record.name, factor=factor, scales_output=True)
        summary = (
            f"{edit.describe()} [{record.class_name}], max |x| {record.output.max_abs:.3g} -> "
            f"{record.output.max_abs * factor:.3g} in fp32"
        )
        return StressPlan("entry-scale", (edit,), summary)
    return StressPlan("entry-scale", skipped="no module with parameters produced a finite, non-zero output")


# keep-in-fp32


def plan_keep_in_fp32(context: PlanningContext) -> StressPlan:
    """Scale the parameters from_pretrained(dtype=float16) keeps in float32, to outputs of at least OVERFLOW_TARGET."""
    kept = context.kept_in_fp32()
    if not kept:
        return StressPlan("keep-in-fp32", skipped="from_pretrained(dtype=float16) keeps no parameter in float32")
    owners = {name.rpartition(".")[0] for name in kept}
    current = _max_output(context.baseline, owners)
    if current == 0:
        return StressPlan("keep-in-fp32", skipped=f"the modules of {sorted(kept)} gave no finite, non-zero output")
    factor = power_of_two_factor(current, OVERFLOW_TARGET, at_least=True)
    edits = tuple(WeightEdit(name, factor=factor) for name in sorted(kept))
    reached = _max_output(context.measure(edits, None).records, owners)
    summary = (
        f"{len(edits)} parameter(s) kept in fp32 ({short_names(kept)}) x {_power_of_two(factor)}, "
        f"their outputs' max |x| {current:.3g} -> {reached:.3g} in fp32 ({reached / FP16_MAX:.2g}x the fp16 max)"
    )
    return StressPlan("keep-in-fp32", edits, summary)


def short_names(names: frozenset[str]) -> str:
    """Join the distinct last two segments of parameter names: 'wo.weight' for '...DenseReluDense.wo.weight'."""
    suffixes = sorted({".".join(name.split(".")[-2:]) for name in names})
    return ", ".join(suffixes)


# gemma4-vision-pooler

POOLER_CLASS = "Gemma4VisionPooler"


def plan_gemma4_vision_pooler(context: PlanningContext) -> StressPlan:
    """Raise a Gemma 4 vision encoder's output until its pooler's float32 output reaches OVERFLOW_TARGET."""
    poolers = [name for name, module in context.model.named_modules() if type(module).__name__ == POOLER_CLASS]
    if not poolers:
        return StressPlan("gemma4-vision-pooler", skipped=f"the model has no {POOLER_CLASS}")
    pooler = poolers[0]
    tower_name = pooler.rpartition(".")[0]
    tower = context.model.get_submodule(tower_name)
    layers = getattr(getattr(tower, "encoder", None), "layers", None)
    gain = f"{tower_name}.encoder.layers.{len(layers or ()) - 1}.post_feedforward_layernorm.weight"
    try:
        context.model.get_parameter(gain)
    except AttributeError:
        return StressPlan("gemma4-vision-pooler", skipped=f"the vision tower has no parameter {gain!r}")

    current = _max_output(context.baseline, {pooler})
    factor = power_of_two_factor(current, OVERFLOW_TARGET, at_least=True)
    # The residual added beside the scaled branch can cancel part of it, so double until the target is reached.
    for _ in range(4):
        edits: tuple[WeightEdit, ...] = (WeightEdit(gain, factor=factor),)
        measured = context.measure(edits, pooler)
        reached = _max_output(measured.records, {pooler})
        if reached >= OVERFLOW_TARGET:
            break
        factor *= 2
    summary = (
        f"{gain} x {_power_of_two(factor)}, pooler output max |x| {current:.3g} -> {reached:.3g} in fp32 "
        f"({reached / FP16_MAX:.2g}x the fp16 max)"
    )

    if getattr(tower.config, "standardize", False) and measured.captured is not None:
        features = measured.captured.reshape(-1, measured.captured.shape[-1]).double()
        bias = features.mean(dim=0).clamp(-STD_BIAS_LIMIT, STD_BIAS_LIMIT)
        scale = 1.0 / (features - bias).pow(2).mean(dim=0).sqrt().clamp_min(1e-6)
        edits += (
            WeightEdit(f"{tower_name}.std_bias", values=bias.float()),
            WeightEdit(f"{tower_name}.std_scale", values=scale.float()),
        )
        summary += (
            f"; std_bias set to the features' per-channel mean (limited to +-{STD_BIAS_LIMIT:.0f}), "
            "std_scale to 1 / their per-channel RMS around it"
        )
    else:
        summary += "; the vision config does not standardize, so the library casts these features as they are"
    return StressPlan("gemma4-vision-pooler", edits, summary)


PROFILES: dict[str, StressProfile] = {
    profile.name: profile
    for profile in (
        StressProfile(
            "entry-scale",
            "multiplies the entry module's output (token, patch or audio embedding) to a max |x| of about 4096 "
            "in fp32: the order of the 'massive activations' of trained language models, 16x below the fp16 max",
            default=True,
            planner=plan_entry_scale,
        ),
        StressProfile(
            "keep-in-fp32",
            "scales the parameters from_pretrained(dtype=float16) keeps in fp32 (T5 wo, DeepSeek gate.weight) "
            "until their outputs reach 8e4 (1.2x the fp16 max), the overflow those declarations guard against",
            default=True,
            planner=plan_keep_in_fp32,
        ),
        StressProfile(
            "gemma4-vision-pooler",
            "scales the last Gemma 4 vision encoder layer's post-feedforward norm gain until the pooler's "
            "sqrt(hidden_size)-scaled output reaches 8e4 (1.2x the fp16 max, as measured on Gemma 4 26B), and "
            "standardizes it as a trained checkpoint does: the overflow that made Transformers v5.10.1 scale in fp32",
            default=True,
            planner=plan_gemma4_vision_pooler,
        ),
    )
}


def select_profiles(selector: str | None) -> list[StressProfile]:
    """Resolve a comma-separated selector: profile names, ``default``, ``all`` or ``none``.

    The unedited model (profile ``none``) always runs besides the selected profiles.
    """
    tokens = [token.strip() for token in (selector or "default").split(",") if token.strip()]
    chosen: dict[str, StressProfile] = {}
    for token in tokens:
        if token == BASELINE:
            continue
        if token == "default":
            chosen.update({name: profile for name, profile in PROFILES.items() if profile.default})
        elif token == "all":
            chosen.update(PROFILES)
        elif token in PROFILES:
            chosen[token] = PROFILES[token]
        else:
            known = ", ".join(["default", "all", BASELINE, *PROFILES])
            raise ValueError(f"unknown stress profile {token!r}; known profiles: {known}")
    return list(chosen.values())
