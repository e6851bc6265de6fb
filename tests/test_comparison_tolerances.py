"""The accuracy and latency tolerance tables, and the verdicts judged against them."""

from __future__ import annotations

from harness.accuracy import compare_paired
from harness.backends import Variant
from harness.comparison_tolerances import (
    AccuracyTolerance,
    LatencyTolerance,
    _document,
    accuracy_tolerance_for,
    judge_accuracy,
    judge_agreement,
    judge_latency,
    latency_tolerance_for,
)
from harness.timing import Speedup

REFERENCE = "eager:fp32:eager"


def tolerance(max_drop: float = 0.02, min_agreement: float = 0.9) -> AccuracyTolerance:
    return AccuracyTolerance(max_drop, min_agreement, significance_level=0.05, source="test", reason="test")


def test_every_entry_has_a_reason():
    document = _document()

    for table in ("accuracy", "latency"):
        for entry in document[table]:
            assert entry["reason"].strip(), entry


def test_scheme_entry_beats_its_family():
    variant = Variant("quantized-int8dq", "fp32", (("path", "transformers"),))

    found = accuracy_tolerance_for(variant, "quantized")

    assert found.source == "accuracy quantized/quantized-int8dq"
    assert found.max_drop > accuracy_tolerance_for(Variant("quantized-int8wo", "fp32"), "quantized").max_drop


def test_unknown_scheme_falls_back_to_its_family():
    found = accuracy_tolerance_for(Variant("quantized-newscheme", "fp32"), "quantized")

    assert found.source == "accuracy quantized"


def test_unknown_family_falls_back_to_any():
    found = accuracy_tolerance_for(Variant("third-party", "bf16"), "third-party")

    assert found.source == "accuracy *"


def test_dtype_entry_applies_to_eager_variants():
    assert (
        accuracy_tolerance_for(Variant("eager", "bf16", (("attn", "sdpa"),)), "eager").source == "accuracy eager/bf16"
    )


def test_latency_is_judged_only_where_the_table_says():
    assert latency_tolerance_for(Variant("eager", "fp32", (("attn", "sdpa"),)), "eager") is not None
    assert latency_tolerance_for(Variant("eager", "bf16", (("attn", "sdpa"),)), "eager") is None


def test_significant_drop_beyond_allowed_fails():
    comparison = compare_paired([1] * 20 + [0] * 20, [0] * 20 + [0] * 20, [0] * 40, [1] * 20 + [0] * 20)

    verdict = judge_accuracy(comparison, tolerance(), REFERENCE)

    assert not verdict.passed
    assert verdict.margin < 0
    assert "drop 0.500, allowed 0.02" in verdict.message
    assert "20 items worse and 0 better" in verdict.message


def test_drop_without_significance_passes_with_a_note():
    comparison = compare_paired([1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1])

    verdict = judge_accuracy(comparison, tolerance(), REFERENCE)

    assert verdict.passed
    assert "not significant" in verdict.notes[0]


def test_drop_within_allowed_passes():
    comparison = compare_paired([1] * 100, [1] * 99 + [0], [0] * 100, [0] * 99 + [1])

    verdict = judge_accuracy(comparison, tolerance(max_drop=0.02), REFERENCE)

    assert verdict.passed
    assert verdict.margin == 0.5


def test_low_agreement_fails_with_count_of_differing_answers():
    comparison = compare_paired([0] * 10, [0] * 10, list(range(10)), [*range(7), 0, 0, 0])

    verdict = judge_agreement(comparison, tolerance(min_agreement=0.9), REFERENCE)

    assert not verdict.passed
    assert verdict.message == "agreement with eager:fp32:eager 0.700 < 0.9 (3 of 10 answers differ)"


def test_slower_beyond_allowed_fails():
    allowed = LatencyTolerance(min_speedup=0.8, source="test", reason="test")

    slow = judge_latency(Speedup(0.4, 0.35, 0.45, 0.95), allowed, REFERENCE)
    undecided = judge_latency(Speedup(0.75, 0.6, 0.9, 0.95), allowed, REFERENCE)

    assert not slow.passed
    assert "below the allowed 0.8" in slow.message
    assert undecided.passed
