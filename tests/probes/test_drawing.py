"""Drawing probe inputs: the bounds an input builder accepts, and shrinking to a minimal example."""

from __future__ import annotations

import pytest

from harness.cases import get_case
from harness.cases.build import build_config
from harness.probes.consistency import ProbeOutcome
from harness.probes.drawing import Example, InputSpace, ProbeRaisedError, batches, explore, sliding_window_of
from harness.tolerances import Verdict


def space_of(case_id: str, sides: tuple[str, ...] = ("left", "right")) -> InputSpace:
    case = get_case(case_id)
    return InputSpace(case.inputs, build_config(case), None, sides)


def test_text_space_accepts_short_rows_and_both_sides():
    space = space_of("llama-tiny")

    assert space.min_length == 2
    assert space.max_pad("left", 6) == 5
    assert space.max_pad("right", 6) == 5
    assert space.window is None


def test_multimodal_space_follows_builder_limits():
    space = space_of("gemma4-unified-tiny")

    assert space.min_length == 15
    assert space.max_pad("left", 20) == 4
    assert space.max_pad("right", 20) == 0
    assert space.window == 8
    assert space.lengths(past_window=True)[0] == 15


def test_sliding_window_needs_sliding_layers():
    mellum = build_config(get_case("mellum-tiny"))
    qwen = build_config(get_case("qwen3-moe-tiny"))

    assert sliding_window_of(mellum) == 4
    assert sliding_window_of(qwen) is None


def test_image_space_has_fixed_length():
    space = space_of("sapiens2-tiny")

    assert not space.has_stream
    assert space.sides == ()
    assert space.lengths() == (16, 16)


def outcome(passed: bool) -> ProbeOutcome:
    return ProbeOutcome(verdict=Verdict(passed=passed, margin=1.0 if passed else -1.0, limiting="test"))


def test_explore_shrinks_failure_to_minimal_example():
    space = space_of("llama-tiny")
    exploration = explore(
        lambda example: outcome(example.seq_len < 6 or example.batch_size < 2),
        batches(space, sides=("none", "left")),
        key="test/llama-tiny/eager:fp32",
        database=None,
        share=10.0,
    )

    assert exploration.failed
    assert exploration.example.seq_len == 6
    assert exploration.example.batch_size == 2
    assert exploration.example.padding == "none"
    assert exploration.deterministic


def test_explore_repeats_examples_per_key():
    space = space_of("llama-tiny")
    seen: list[list[Example]] = [[], []]
    for run in seen:
        explore(
            lambda example, run=run: run.append(example) or outcome(True),
            batches(space, sides=("none", "left")),
            key="test/same",
            database=None,
        )

    assert seen[0] == seen[1]
    assert len(seen[0]) == 3


def test_explore_reports_examples_that_raise():
    def probe(example: Example) -> ProbeOutcome:
        raise RuntimeError(f"length {example.seq_len}")

    with pytest.raises(ProbeRaisedError, match="minimal example batch_size=1, seq_len=2, .* raised RuntimeError"):
        explore(probe, batches(space_of("llama-tiny")), key="test/raise", database=None)


def test_example_description_omits_unset_fields():
    example = Example(batch_size=2, seq_len=7, padding="none", pad_len=0, seed=3, row=1)

    assert example.describe() == "batch_size=2, seq_len=7, padding=none, seed=3, row=1"
