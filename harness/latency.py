"""Latency of a prepared model: prefill at several lengths, time to first token, per-token decode.

Every measurement calls what the backend prepared (``PreparedModel.forward``, or its
``runner`` for decode steps), at batch size 1. Decode runs a greedy loop over the model's
own key-value cache rather than ``generate``, so that a backend's runner (a compiled
forward, say) is what each step calls. When a baseline is given, the two models run
interleaved round by round and every measurement gets a speedup with its interval.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.backends import PreparedModel
from harness.cases import BuiltCase, Case
from harness.inputs import InputSpec, ModelInputs, build_inputs, text_config_of
from harness.timing import (
    Clock,
    Durations,
    Speedup,
    TimingPlan,
    collect,
    collect_interleaved,
    speedup,
    summarize,
)

PREFILL_LENGTHS = (16, 64, 128)
# Input kinds whose sequence length the spec sets. Other kinds carry an image or audio
# part of fixed shape, so they are timed at one length, the default spec's.
_LENGTH_KINDS = {"text", "seq2seq-text"}
NEW_TOKENS = 8
PREFILL_PLAN = TimingPlan(warmup=2, min_repeats=10, min_seconds=0.5)
# A generation costs NEW_TOKENS forwards, so one warm-up run suffices.
GENERATION_PLAN = TimingPlan(warmup=1, min_repeats=10, min_seconds=0.5)


def generates(case: Case) -> bool:
    """Return whether the decode loop applies: decoder-only language models on text."""
    return case.auto_class == "AutoModelForCausalLM" and case.inputs == "text"


def prefill_lengths(built: BuiltCase) -> list[int]:
    """Return the sequence lengths to time, capped by the model's maximum positions."""
    if built.case.inputs not in _LENGTH_KINDS:
        return [InputSpec().seq_len]
    limit = getattr(text_config_of(built.config), "max_position_embeddings", None)
    lengths = [length for length in PREFILL_LENGTHS if limit is None or length + NEW_TOKENS <= limit]
    return lengths or [min(PREFILL_LENGTHS)]


def latency_inputs(built: BuiltCase, length: int) -> ModelInputs:
    """Return one unpadded row of ``length`` tokens (or the kind's fixed shape)."""
    spec = InputSpec(name=f"latency-{length}", batch_size=1, seq_len=length)
    return build_inputs(built.case.inputs, built.config, spec, built.tokenizer)


def prefill_repeat(prepared: PreparedModel, inputs: ModelInputs, clock: Clock) -> Callable[[], Durations]:
    return lambda: {"prefill": clock.time(lambda: prepared.forward(inputs))[1]}


def generation_repeat(
    prepared: PreparedModel, inputs: ModelInputs, clock: Clock, new_tokens: int = NEW_TOKENS
) -> Callable[[], Durations]:
    return lambda: time_greedy_generation(prepared, inputs, clock, new_tokens)


def time_greedy_generation(
    prepared: PreparedModel, inputs: ModelInputs, clock: Clock, new_tokens: int = NEW_TOKENS
) -> dict[str, float]:
    """Generate ``new_tokens`` greedily; return the time to first token and the mean decode step, in seconds.

    The time to first token covers the prefill forward and picking its token. The loop
    runs under ``torch.no_grad`` rather than ``inference_mode``, because some quantized
    tensor subclasses reject inference tensors; both sides of a comparison run it alike.
    """
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be at least 2 to time a decode step, got {new_tokens}")
    # A compiled runner (torch's OptimizedModule) raises on truth tests, so compare with None.
    call = prepared.runner if prepared.runner is not None else prepared.module
    tensors = inputs.to(prepared.device, prepared.variant.torch_dtype)
    mask = tensors["attention_mask"]
    parameters = inspect.signature(prepared.module.forward).parameters
    # Transformers 5.25 renamed the key-value cache argument and output from
    # `past_key_values` to `cache`; models that predate the rename still take the old name.
    cache_name = "cache" if "cache" in parameters else "past_key_values"
    # Generation computes logits for the last position only; so does this loop, where the model allows.
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def step(**kwargs: Any) -> tuple[Any, torch.Tensor]:
        outputs = call(**kwargs, use_cache=True, **extra)
        return outputs[cache_name], outputs.logits[:, -1:].argmax(dim=-1)

    with torch.no_grad():
        (cache, token), first_token = clock.time(lambda: step(**tensors))
        decode = 0.0
        for _ in range(new_tokens - 1):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            (cache, token), seconds = clock.time(
                lambda: step(input_ids=token, attention_mask=mask, **{cache_name: cache})  # noqa: B023 - called at once
            )
            decode += seconds
    return {"ttft": first_token, "decode": decode / (new_tokens - 1)}


@dataclass
class Measurement:
    """One timed quantity: the candidate's samples, and the interleaved baseline's when there is one."""

    samples: np.ndarray
    baseline: np.ndarray | None = None

    def speedup(self) -> Speedup | None:
        return None if self.baseline is None else speedup(self.baseline, self.samples)


@dataclass
class LatencyProfile:
    """Every measurement of one prepared model, keyed ``prefill_<length>``, ``ttft`` and ``decode``."""

    measurements: dict[str, Measurement] = field(default_factory=dict)
    # Which measurement stands for the model's speed: decode for generators, else the longest prefill.
    headline: str = ""


def measure_profile(
    prepared: PreparedModel,
    built: BuiltCase,
    clock: Clock,
    baseline: PreparedModel | None = None,
) -> LatencyProfile:
    """Time prefill at each length, then generation when the case generates; interleave with ``baseline``."""
    profile = LatencyProfile()
    for length in prefill_lengths(built):
        inputs = latency_inputs(built, length)
        candidate = prefill_repeat(prepared, inputs, clock)
        other = prefill_repeat(baseline, inputs, clock) if baseline is not None else None
        samples = _collect(candidate, other, PREFILL_PLAN)
        profile.measurements[f"prefill_{length}"] = samples["prefill"]
        profile.headline = f"prefill_{length}"

    if generates(built.case):
        inputs = latency_inputs(built, min(PREFILL_LENGTHS))
        candidate = generation_repeat(prepared, inputs, clock)
        other = generation_repeat(baseline, inputs, clock) if baseline is not None else None
        samples = _collect(candidate, other, GENERATION_PLAN)
        profile.measurements["ttft"] = samples["ttft"]
        profile.measurements["decode"] = samples["decode"]
        profile.headline = "decode"
    return profile


def _collect(
    candidate: Callable[[], Durations], baseline: Callable[[], Durations] | None, plan: TimingPlan
) -> dict[str, Measurement]:
    if baseline is None:
        return {name: Measurement(samples) for name, samples in collect(candidate, plan).items()}
    baseline_samples, candidate_samples = collect_interleaved(baseline, candidate, plan)
    return {name: Measurement(candidate_samples[name], baseline_samples[name]) for name in candidate_samples}


def profile_metrics(profile: LatencyProfile) -> dict[str, Any]:
    """Flatten a profile into result metrics: order statistics in ms, speedups, tokens per second."""
    metrics: dict[str, Any] = {}
    for name, measurement in profile.measurements.items():
        metrics.update(summarize(measurement.samples).as_metrics(name))
        result = measurement.speedup()
        if result is not None:
            assert measurement.baseline is not None
            metrics[f"baseline_{name}_median_ms"] = summarize(measurement.baseline).median * 1e3
            metrics.update({f"{name}_speedup": result.ratio, f"{name}_speedup_low": result.low})
            metrics[f"{name}_speedup_high"] = result.high
    if "decode" in profile.measurements:
        metrics["tokens_per_s"] = 1.0 / summarize(profile.measurements["decode"].samples).median
    metrics["headline"] = profile.headline
    return metrics
