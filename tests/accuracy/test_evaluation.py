"""Per-item outcomes read from lm-eval's logged samples."""

from __future__ import annotations

import pytest

from harness.accuracy import TaskOutcomeError
from harness.accuracy.evaluation import outcome_from_samples


def multiple_choice_sample(doc_id: int, logliks: list[float], correct: bool) -> dict:
    return {
        "doc_id": doc_id,
        "doc": {"id": f"item-{doc_id}"},
        "filtered_resps": [(value, False) for value in logliks],
        "metrics": ["acc", "acc_norm"],
        "acc": 1.0 if correct else 0.0,
        "acc_norm": 1.0 if correct else 0.0,
    }


def test_multiple_choice_outcome_in_item_order():
    samples = {"task": [multiple_choice_sample(1, [-3.0, -1.0], False), multiple_choice_sample(0, [-1.0, -2.0], True)]}

    outcome = outcome_from_samples("task", samples, seconds=1.0)

    assert outcome.metric == "acc"
    assert outcome.kind == "multiple_choice"
    assert outcome.items == ["item-0", "item-1"]
    assert outcome.scores.tolist() == [1.0, 0.0]
    assert outcome.answers == [0, 1]


def test_generation_outcome_keeps_the_filtered_completion():
    sample = {"doc_id": 0, "doc": {}, "filtered_resps": ["Paris"], "metrics": ["exact_match"], "exact_match": 1.0}

    outcome = outcome_from_samples("gen", {"gen": [sample]}, seconds=1.0)

    assert outcome.kind == "generate_until"
    assert outcome.answers == ["Paris"]
    assert outcome.items == ["0"]


def test_group_task_outcomes_are_concatenated_by_subtask_name():
    samples = {
        "group_b": [multiple_choice_sample(0, [-1.0, -2.0], True)],
        "group_a": [multiple_choice_sample(0, [-2.0, -1.0], False)],
    }

    outcome = outcome_from_samples("group", samples, seconds=1.0)

    assert outcome.scores.tolist() == [0.0, 1.0]


def test_non_numeric_metric_is_an_error_naming_it():
    sample = {"doc_id": 0, "doc": {}, "filtered_resps": [], "metrics": ["perplexity"], "perplexity": (1.0, 2.0)}

    with pytest.raises(TaskOutcomeError, match="metric 'perplexity'"):
        outcome_from_samples("task", {"task": [sample]}, seconds=1.0)
