"""Accuracy: every variant evaluated with lm-eval, compared item by item with the eager fp32 reference.

Each check runs one task on one variant through ``lm_eval.simple_evaluate`` and pairs its
per-item outcomes with the live reference's on the same items. The tasks are those
``--tasks`` names, by default the local tasks under ``tasks/``. A trained checkpoint is
judged by its accuracy drop and a McNemar test. A random-weight tiny case, whose accuracy
is chance, is judged by how often it gives the reference's answer. Tiny cases ship no
tokenizer, so they get a byte-level BPE tokenizer trained on the local tasks' text.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from harness.accuracy import (
    TaskFileError,
    compare_paired,
    evaluate_task,
    local_tasks,
    resolve_tasks,
    task_corpus,
    train_tokenizer,
)
from harness.backends import get_backend
from harness.cases import BuiltCase, Case
from harness.checks import check
from harness.comparison_tolerances import accuracy_tolerance_for, judge_accuracy, judge_agreement
from harness.inputs import text_config_of

SUITE = "accuracy"
RUN_BY_DEFAULT = True
# Without --suites, the run evaluates the one trained checkpoint in fp32 and bf16; naming
# the suite (--suites accuracy) evaluates every selected case and variant.
DEFAULT_RUN_CASES = "smollm2-135m"
DEFAULT_RUN_BACKENDS = "eager:fp32:eager,eager:bf16:sdpa"

TASKS_DIR = Path(__file__).parent / "tasks"
# Tiny models have vocabularies of 512; a trained tokenizer never needs more.
TOKENIZER_VOCABULARY = 512
# Items listed by id in a result when the variant got them wrong and the reference right.
LISTED_ITEMS = 20


def evaluable(case: Case) -> bool:
    """Return whether lm-eval's causal-LM path applies: decoder-only language models on text."""
    return case.auto_class == "AutoModelForCausalLM" and case.inputs == "text"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "task" not in metafunc.fixturenames:
        return
    if importlib.util.find_spec("lm_eval") is None:
        reason = "lm-eval is not installed; install the harness with its 'evaluation' extra"
        metafunc.parametrize("task", [pytest.param(None, id="no-lm-eval", marks=pytest.mark.skip(reason=reason))])
        return
    try:
        tasks = resolve_tasks(metafunc.config.getoption("tasks"), TASKS_DIR)
    except TaskFileError as error:
        raise pytest.UsageError(str(error)) from None
    metafunc.parametrize("task", tasks, ids=[task.name for task in tasks])


@cache
def trained_tokenizer(vocab_size: int):
    return train_tokenizer(task_corpus(list(local_tasks(TASKS_DIR).values())), vocab_size)


def evaluation_tokenizer(built: BuiltCase):
    """Return the checkpoint's tokenizer, or a trained one sized to fit a tiny model's vocabulary."""
    if built.tokenizer is not None:
        return built.tokenizer
    vocab_size = text_config_of(built.config).vocab_size
    try:
        return trained_tokenizer(min(vocab_size, TOKENIZER_VOCABULARY))
    except ValueError as error:
        pytest.skip(f"{built.case.id}: {error}")


@pytest.fixture(scope="session")
def reference_outcomes() -> dict:
    """The live reference's outcomes per (case, task), shared by every variant's check."""
    return {}


@check(variants="all", applies_to=evaluable)
def test_accuracy(harness, case, variant, input_spec, prepared, check, task, reference_outcomes):
    # The task is this check's input: the results file's input column names it.
    check.input_spec = replace(input_spec, name=task.name)
    built = harness.built(case)
    tokenizer = evaluation_tokenizer(built)
    reference_variant = harness.reference_variant(case)
    key = (case.id, task.name)
    if key not in reference_outcomes:
        reference_model = prepared if variant == reference_variant else harness.prepared(case, reference_variant)
        reference_outcomes[key] = evaluate_task(reference_model, tokenizer, task)
    reference = reference_outcomes[key]
    outcome = reference if variant == reference_variant else evaluate_task(prepared, tokenizer, task)

    comparison = compare_paired(reference.scores, outcome.scores, reference.answers, outcome.answers)
    tolerance = accuracy_tolerance_for(variant, get_backend(variant.backend).family)
    worse = [item for item, r, c in zip(outcome.items, reference.scores, outcome.scores, strict=True) if r > c]
    trained = case.source != "tiny"
    check.record(
        **comparison.as_metrics(),
        task=task.name,
        task_source=task.source,
        metric=outcome.metric,
        kind=outcome.kind,
        weights="trained" if trained else "random",
        reference=reference_variant.id,
        evaluate_s=outcome.seconds,
        worse_items=worse[:LISTED_ITEMS],
    )

    if trained:
        verdict = judge_accuracy(comparison, tolerance, reference_variant.id)
    elif outcome.kind == "generate_until":
        check.note(
            "generation on random weights diverges at the first flipped token; agreement is recorded, not judged"
        )
        return
    else:
        verdict = judge_agreement(comparison, tolerance, reference_variant.id)
    check.thresholds = tolerance.as_dict()
    check.margin = verdict.margin
    check.record(limiting=verdict.limiting)
    for note in verdict.notes:
        check.note(note)
    if not verdict.passed:
        listed = f"; items worse: {', '.join(worse[:LISTED_ITEMS])}" if worse and trained else ""
        check.fail(verdict.message + listed)
