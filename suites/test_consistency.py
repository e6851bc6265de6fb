"""Consistency: each variant checked against itself, on inputs drawn by Hypothesis.

Causality, padding and batch invariance, cache consistency, greedy generation with and
without a cache, static against dynamic cache, assisted generation, and determinism. Every
probe compares two runs of the same prepared model, so it holds on any backend. Outputs are
judged with the parity tolerance table, or bitwise where the arithmetic must be identical.
A failure names the minimal example Hypothesis shrank it to. The deterministic default
profile draws the same examples on every run, so rerunning the check replays it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from harness.backends import get_backend
from harness.checks import check
from harness.inputs import InputSpec, resolve_padding
from harness.probes import consistency, drafters, drawing
from harness.probes.consistency import Judgement, ProbedModel, exact_reason
from harness.probes.drawing import Example, Exploration, InputSpace
from harness.probes.generation import greedy_generate, judge_generations
from harness.probes.rows import TokenLayout, token_layout
from harness.tolerances import tolerance_for

SUITE = "consistency"
RUN_BY_DEFAULT = True

DRAWN = InputSpec(name="drawn")
# Generation probes run several forwards per token, so they draw fewer examples.
GENERATION_SHARE = 0.5
# Repeated runs in the determinism probe: GPU nondeterminism can need more than one retry to show.
DETERMINISM_RUNS = {"cpu": 2, "cuda": 4}


def generates(case) -> bool:
    return case.is_decoder


def decoder_only(case) -> bool:
    return case.is_decoder and "seq2seq" not in case.tags


def paddable(case) -> bool:
    return resolve_padding(InputSpec(padding="right"), case.inputs, pads_left=False) is not None


def padding_sides(case) -> tuple[str, ...]:
    """Decoder-only models are padded left for generation and right for scoring; others on the right."""
    return ("left", "right") if decoder_only(case) else ("right",)


def generation_sides(case) -> tuple[str, ...]:
    return ("none", "left") if decoder_only(case) else ("none",)


@dataclass
class Probing:
    """What every check of this suite works with: the model, its input space, where examples are kept."""

    model: ProbedModel
    space: InputSpace
    case: Any
    variant: Any
    device: str
    database: Path

    def judgement(self, probe: str) -> Judgement:
        family = get_backend(self.variant.backend).family
        tolerance = tolerance_for(family, self.variant.dtype, self.case.id)
        return Judgement.from_table(
            tolerance, self.variant.dtype, exact_reason(probe, self.variant, family, self.device)
        )

    def key(self, probe: str) -> str:
        return f"{probe}/{self.case.id}/{self.variant.id}"

    def tensors(self, example: Example) -> tuple[dict[str, Any], TokenLayout | None]:
        tensors = self.space.build(example.spec()).tensors
        return tensors, token_layout(tensors)

    def explore(self, probe: str, run: Any, examples: Any, share: float = 1.0) -> Exploration:
        return drawing.explore(run, examples, key=self.key(probe), database=self.database, share=share)


# Input spaces by built checkpoint folder: finding a case's bounds builds inputs many times.
_SPACES: dict[str, InputSpace] = {}


@pytest.fixture
def probing(harness, case, variant, prepared, run_dir) -> Probing:
    built = harness.built(case)
    key = str(built.folder)
    if key not in _SPACES:
        _SPACES[key] = InputSpace(case.inputs, built.config, built.tokenizer, padding_sides(case))
    space = _SPACES[key]
    model = ProbedModel(prepared, built.config)
    return Probing(model, space, case, variant, harness.device, run_dir / "hypothesis")


def record(check, exploration: Exploration, judgement: Judgement) -> None:
    """Record an exploration's worst or failing run in the result; fail the check with its minimal example."""
    outcome = exploration.outcome
    metrics: dict[str, Any] = {
        "examples": exploration.runs,
        "deterministic_draw": exploration.deterministic,
        "bitwise": outcome.bitwise,
        **outcome.metrics,
    }
    if outcome.comparison is not None:
        metrics.update(outcome.comparison.as_metrics())
    metrics["counterexample" if exploration.failed else "worst_example"] = exploration.example.describe()
    if outcome.culprit is not None:
        metrics["first_differing_module"] = outcome.culprit.module
    check.record(**metrics, limiting=outcome.verdict.limiting)
    check.thresholds = judgement.thresholds()
    check.margin = outcome.verdict.margin
    for note in outcome.notes:
        check.note(note)
    if exploration.failed:
        check.fail(f"{outcome.describe_failure()}; minimal example: {exploration.example.describe()}")


@check(inputs=(DRAWN,), applies_to=generates)
def test_causality(case, variant, input_spec, probing, check):
    judgement = probing.judgement("causality")

    def run(example: Example):
        tensors, layout = probing.tensors(example)
        return consistency.probe_causality(
            probing.model, tensors, layout, judgement, row=example.row, position=example.position, token=example.token
        )

    examples = drawing.causality_examples(probing.space, probing.model, generation_sides(probing.case))
    exploration = probing.explore("causality", run, examples)
    exception = consistency.grouping_exception(probing.variant)
    if exception and probing.variant.dtype == "fp32" and probing.device == "cpu":
        check.note(exception)
    record(check, exploration, judgement)


@check(inputs=(DRAWN,), applies_to=paddable)
def test_padding_invariance(case, variant, input_spec, probing, check):
    judgement = probing.judgement("padding")
    sides = padding_sides(probing.case)
    if not any(probing.space.max_pad(side, probing.space.lengths()[1]) for side in sides):
        pytest.skip(f"the {probing.case.inputs!r} inputs of {probing.case.id} accept no padding on {sides}")

    def run(example: Example):
        tensors, layout = probing.tensors(example)
        return consistency.probe_padding(probing.model, tensors, layout, judgement)

    exploration = probing.explore("padding", run, drawing.batches(probing.space, sides=sides))
    record(check, exploration, judgement)


@check(inputs=(DRAWN,))
def test_batch_invariance(case, variant, input_spec, probing, check):
    judgement = probing.judgement("batch")

    def run(example: Example):
        tensors, layout = probing.tensors(example)
        donor, _ = probing.tensors(replace(example, seed=example.seed + 1))
        return consistency.probe_batch(probing.model, tensors, donor, layout, judgement, row=example.row)

    exploration = probing.explore("batch", run, drawing.batch_examples(probing.space))
    record(check, exploration, judgement)


@check(inputs=(DRAWN,), applies_to=generates)
def test_cache_consistency(case, variant, input_spec, probing, check):
    judgement = probing.judgement("cache")

    def run(example: Example):
        tensors, layout = probing.tensors(example)
        return consistency.probe_cache(probing.model, tensors, layout, judgement, decode_steps=example.decode_steps)

    examples = drawing.cache_examples(probing.space, probing.model, generation_sides(probing.case))
    exploration = probing.explore("cache", run, examples)
    note_window(check, probing)
    record(check, exploration, judgement)


def note_window(check, probing: Probing) -> None:
    window = probing.space.window
    if window is not None and window > drawing.MAX_PROBED_WINDOW:
        check.note(f"sliding window {window} is longer than the drawn inputs; not probed past it")
    elif window is not None:
        check.note(f"probed past the sliding window of {window}")


def generation_check(probing: Probing, check, probe: str, what: str, reference: dict, candidate: dict) -> None:
    """Compare greedy generation with ``candidate`` options against generation with ``reference`` options."""
    judgement = probing.judgement(probe)
    prepared = probing.model.prepared

    suppressed = probing.model.suppressed_ids

    def run(example: Example):
        tensors, _ = probing.tensors(example)
        expected = greedy_generate(prepared, tensors, example.new_tokens, suppressed=suppressed, **reference)
        actual = greedy_generate(prepared, tensors, example.new_tokens, suppressed=suppressed, **candidate)
        return judge_generations(expected, actual, judgement, what=what)

    examples = drawing.generation_examples(probing.space, generation_sides(probing.case))
    exploration = probing.explore(probe, run, examples, share=GENERATION_SHARE)
    note_window(check, probing)
    record(check, exploration, judgement)


@check(inputs=(DRAWN,), applies_to=generates)
def test_generation_with_cache(case, variant, input_spec, probing, check):
    generation_check(
        probing, check, "generation-cache", "greedy generation with a cache", {"use_cache": False}, {"use_cache": True}
    )


@check(inputs=(DRAWN,), applies_to=generates)
def test_static_cache(case, variant, input_spec, probing, check):
    generation_check(
        probing,
        check,
        "static-cache",
        "greedy generation with a static cache",
        {"cache_implementation": "dynamic"},
        {"cache_implementation": "static"},
    )


@check(inputs=(DRAWN,), applies_to=decoder_only)
def test_assisted_generation(case, variant, input_spec, probing, check):
    reason = drafters.drafter_unavailable_reason(probing.model.module)
    if reason is not None:
        pytest.skip(reason)
    judgement = probing.judgement("assisted")
    prepared = probing.model.prepared

    def run(example: Example):
        tensors, _ = probing.tensors(example)
        drafter = drafters.build_drafter(prepared.module, draft_tokens=example.draft_tokens, seed=example.seed)
        suppressed = probing.model.suppressed_ids
        expected = greedy_generate(prepared, tensors, example.new_tokens, suppressed=suppressed)
        actual = greedy_generate(
            prepared, tensors, example.new_tokens, suppressed=suppressed, **drafter.generate_options
        )
        outcome = judge_generations(expected, actual, judgement, what="assisted generation")
        outcome.metrics["drafter"] = drafter.description
        return outcome

    exploration = probing.explore("assisted", run, drawing.assisted_examples(probing.space), share=GENERATION_SHARE)
    record(check, exploration, judgement)


@check(inputs=(DRAWN,))
def test_determinism(case, variant, input_spec, probing, check):
    judgement = probing.judgement("determinism")
    runs = DETERMINISM_RUNS.get(probing.device, 2)

    def run(example: Example):
        tensors, layout = probing.tensors(example)
        return consistency.probe_determinism(probing.model, tensors, layout, judgement, runs=runs)

    sides = ("none", *probing.space.sides)
    exploration = probing.explore("determinism", run, drawing.batches(probing.space, sides=sides))
    check.record(device=probing.device)
    record(check, exploration, judgement)
