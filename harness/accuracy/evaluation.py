"""Evaluate a prepared model on an lm-eval task and collect its per-item outcomes.

The prepared model is wrapped in lm-eval's ``HFLM`` class, so requests are batched,
scored and filtered exactly as ``lm_eval`` does for a Hugging Face model. Only the forward
is redirected, to ``PreparedModel.forward``, which runs what the backend prepared (a
compiled runner, a quantized module). Generation requests call the module's ``generate``,
which for a compiled backend runs the uncompiled module.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from harness.accuracy.tasks import EvaluationTask, task_manager
from harness.backends import PreparedModel
from harness.inputs import ModelInputs

log = logging.getLogger(__name__)

BATCH_SIZE = 32
# The metrics that score one item as right (1) or wrong (0), in order of preference.
_BINARY_METRICS = ("acc", "exact_match")


class TaskOutcomeError(ValueError):
    """A task whose results carry no per-item score the accuracy suite can compare."""


@dataclass
class TaskOutcome:
    """Per-item results of one task: scores (1 right, 0 wrong for binary metrics) and answers, in item order.

    An answer is the chosen choice's index for multiple-choice tasks, the filtered
    completion for generation tasks, and whether the continuation was the greedy one for
    log-likelihood tasks.
    """

    task: str
    metric: str
    # "multiple_choice", "loglikelihood" or "generate_until", read from the responses' shape.
    kind: str
    items: list[str]
    scores: np.ndarray
    answers: list[Any]
    seconds: float


@cache
def _prepared_lm_class() -> type:
    """Return the HFLM subclass, defined on first use so that importing this module does not import lm-eval."""
    from lm_eval.models.huggingface import HFLM

    class PreparedLM(HFLM):
        """lm-eval's Hugging Face model whose forward is the prepared model's."""

        def __init__(self, prepared: PreparedModel, tokenizer: Any, batch_size: int) -> None:
            # Log-probabilities are taken in fp32 whatever the model's dtype, so that a bf16
            # variant's score reflects its logits and not bf16 rounding of the scores.
            super().__init__(
                pretrained=prepared.module,
                tokenizer=tokenizer,
                backend="causal",
                batch_size=batch_size,
                softmax_dtype=torch.float32,
            )
            self.prepared = prepared

        def _model_call(self, inps: torch.Tensor, attn_mask: Any = None, labels: Any = None) -> torch.Tensor:
            if attn_mask is not None or labels is not None:
                return super()._model_call(inps, attn_mask, labels)
            return self.prepared.forward(ModelInputs({"input_ids": inps})).logits

    return PreparedLM


def evaluate_task(
    prepared: PreparedModel, tokenizer: Any, task: EvaluationTask, batch_size: int = BATCH_SIZE
) -> TaskOutcome:
    """Run ``task`` on the prepared model through ``lm_eval.simple_evaluate``; return per-item outcomes."""
    from lm_eval import simple_evaluate

    model = _prepared_lm_class()(prepared, tokenizer, batch_size)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # lm-eval and datasets warn about their own deprecations while loading tasks.
        warnings.filterwarnings("ignore", module=r"(lm_eval|datasets)(\.|$)")
        results = simple_evaluate(
            model=model,
            tasks=[task.lm_eval_spec()],
            task_manager=task_manager(task.config is None),
            log_samples=True,
            bootstrap_iters=0,
        )
    seconds = time.perf_counter() - started
    log.info("evaluated %s on %s in %.1f s", prepared.variant.id, task.name, seconds)
    return outcome_from_samples(task.name, results["samples"], seconds)


def outcome_from_samples(task: str, samples_by_task: dict[str, list[dict[str, Any]]], seconds: float) -> TaskOutcome:
    """Collect per-item scores and answers from ``simple_evaluate``'s logged samples.

    A group task (one name standing for several subtasks) logs samples per subtask; they
    are taken in subtask name order, each in item order.
    """
    samples = [
        sample
        for name in sorted(samples_by_task)
        for sample in sorted(samples_by_task[name], key=lambda sample: sample["doc_id"])
    ]
    if not samples:
        raise TaskOutcomeError(f"task {task!r} produced no samples; check that its test split has items")

    metric = _primary_metric(samples[0])
    scores = []
    for sample in samples:
        value = sample.get(metric)
        if isinstance(value, (list, tuple)) or not isinstance(value, (int, float, np.number)) or math.isnan(value):
            raise TaskOutcomeError(
                f"task {task!r}: metric {metric!r} gives {value!r} per item, not a number; "
                f"the accuracy suite compares per-item scores such as {', '.join(_BINARY_METRICS)}"
            )
        scores.append(float(value))
    items = [str((sample.get("doc") or {}).get("id", sample["doc_id"])) for sample in samples]
    answers = [_answer(sample.get("filtered_resps")) for sample in samples]
    kind = _kind(samples[0].get("filtered_resps"))
    return TaskOutcome(task, metric, kind, items, np.asarray(scores), answers, seconds)


def _primary_metric(sample: dict[str, Any]) -> str:
    metrics = list(sample.get("metrics") or [])
    for name in _BINARY_METRICS:
        if name in metrics:
            return name
    if not metrics:
        raise TaskOutcomeError(f"sample of document {sample.get('doc_id')} names no metric")
    return metrics[0]


def _answer(responses: Any) -> Any:
    """Reduce one item's filtered responses to the answer two variants can be compared on."""
    if isinstance(responses, (list, tuple)) and responses and all(_is_loglikelihood(item) for item in responses):
        return int(np.argmax([float(item[0]) for item in responses]))
    if _is_loglikelihood(responses):
        return bool(responses[1])
    if isinstance(responses, (list, tuple)) and len(responses) == 1:
        return responses[0]
    return responses


def _kind(responses: Any) -> str:
    if isinstance(responses, (list, tuple)) and responses and all(_is_loglikelihood(item) for item in responses):
        return "multiple_choice"
    if _is_loglikelihood(responses):
        return "loglikelihood"
    return "generate_until"


def _is_loglikelihood(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], (bool, np.bool_))
