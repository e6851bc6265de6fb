"""Compile: how each compiled variant compiled, its numbers at a new sequence length, and compiled generation.

The compiled backend compiles once per (case, variant) and measures compile time, whether
``fullgraph=True`` holds, graph breaks, and the graphs a second sequence length recompiles.
The first check records those and judges the recompiled graph's output against the live
reference at that length. The second generates greedily through Transformers' compiled
decode step with a static cache, and judges each step's logits against the reference's
logits for the same tokens.
"""

from __future__ import annotations

import pytest
import torch

from harness.backends import get_backend
from harness.backends.compiled import SECOND_LENGTH, generate_compiled
from harness.checks import check
from harness.inputs import ModelInputs
from harness.probes.compare import compare_outputs, primary_output
from harness.probes.localize import localize_failure
from harness.tolerances import judge, tolerance_for

SUITE = "compile"
RUN_BY_DEFAULT = True


def generates_text(case) -> bool:
    """Return whether the case is a text-only decoder, whose generation the check can replay token by token."""
    return case.is_decoder and case.inputs == "text" and "seq2seq" not in case.tags


def _tolerance(case, variant):
    return tolerance_for(get_backend(variant.backend).family, variant.dtype, case.id, backend=variant.backend)


@check(families=("compiled",), inputs=(SECOND_LENGTH,))
def test_compiled_new_length(harness, case, variant, input_spec, prepared, check):
    metrics = prepared.info.get("compile")
    if metrics is None:
        pytest.skip(f"backend {variant.backend} records no compile metrics")
    check.record(**metrics)
    if not metrics["fullgraph"]:
        check.note(f"fullgraph=True failed: {metrics['fullgraph_error']}")

    reference = harness.reference(case, input_spec)
    inputs = harness.inputs(case, input_spec)
    output = primary_output(prepared.forward(inputs))
    comparison = compare_outputs(
        output,
        reference.output,
        valid=inputs.valid,
        float64_reference=reference.float64_output,
        vocabulary=reference.vocabulary,
    )
    tolerance = _tolerance(case, variant)
    verdict = judge(comparison, tolerance, variant.dtype)
    check.record(**comparison.as_metrics(), limiting=verdict.limiting)
    check.thresholds = tolerance.as_dict()
    check.margin = verdict.margin
    if verdict.passed:
        return

    reference_model = harness.prepared(case, harness.reference_variant(case))
    where = localize_failure(reference_model, prepared, inputs, reference.output, tolerance)
    check.record(**where.metrics)
    check.fail(f"at sequence length {input_spec.seq_len}: {'; '.join(verdict.failures)}; {where.text}")


@check(families=("compiled",), applies_to=generates_text)
def test_compiled_generation(harness, case, variant, input_spec, prepared, check):
    inputs = harness.inputs(case, input_spec)
    generation = generate_compiled(prepared.module, inputs, variant, prepared.device)
    check.record(
        generate_s=generation.seconds,
        decode_graphs=generation.graphs,
        decode_graph_breaks=generation.graph_breaks,
        generated_tokens=generation.logits.shape[1],
    )
    if not generation.compiled:
        check.fail("generate() did not compile the decode step, so the static-cache compiled path was not tested")

    # Replay the generated tokens through the reference in one forward: its logits at the
    # positions before each generated token are what each decode step should have produced.
    reference_model = harness.prepared(case, harness.reference_variant(case))
    prompt_length = inputs.tensors["input_ids"].shape[1]
    sequences = generation.sequences
    replay = ModelInputs({"input_ids": sequences, "attention_mask": torch.ones_like(sequences)})
    reference_logits = primary_output(reference_model.forward(replay)).detach().float().cpu()
    reference_logits = reference_logits[:, prompt_length - 1 : -1]

    comparison = compare_outputs(generation.logits, reference_logits, vocabulary=True)
    tolerance = _tolerance(case, variant)
    verdict = judge(comparison, tolerance, variant.dtype)
    check.record(**comparison.as_metrics(), limiting=verdict.limiting)
    check.thresholds = tolerance.as_dict()
    check.margin = verdict.margin

    reference_tokens = reference_model.module.generate(
        **inputs.to(reference_model.device),
        max_new_tokens=generation.logits.shape[1],
        min_new_tokens=generation.logits.shape[1],
        do_sample=False,
        disable_compile=True,
    )
    generated = sequences[:, prompt_length:]
    check.record(token_agreement=float((reference_tokens[:, prompt_length:].cpu() == generated).double().mean()))
    if verdict.passed:
        return

    step = _first_failing_step(generation.logits, reference_logits, tolerance, variant.dtype)
    check.fail(f"compiled decode with a static cache: {'; '.join(verdict.failures)}; first failing step: {step}")


def _first_failing_step(logits: torch.Tensor, reference: torch.Tensor, tolerance, dtype: str) -> int | None:
    for step in range(logits.shape[1]):
        comparison = compare_outputs(logits[:, step : step + 1], reference[:, step : step + 1], vocabulary=True)
        if not judge(comparison, tolerance, dtype).passed:
            return step
    return None
