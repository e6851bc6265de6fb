"""Accuracy of prepared models on lm-eval tasks, compared item by item with the reference.

Public API: :func:`resolve_tasks`, :func:`evaluate_task`, :func:`compare_paired`,
:func:`train_tokenizer`, and the records they return.
"""

from harness.accuracy.evaluation import TaskOutcome, TaskOutcomeError, evaluate_task
from harness.accuracy.statistics import McNemar, PairedComparison, compare_paired, mcnemar, mean_stderr
from harness.accuracy.tasks import EvaluationTask, TaskFileError, local_tasks, resolve_tasks, task_corpus
from harness.accuracy.tokenizer import train_tokenizer

__all__ = [
    "EvaluationTask",
    "McNemar",
    "PairedComparison",
    "TaskFileError",
    "TaskOutcome",
    "TaskOutcomeError",
    "compare_paired",
    "evaluate_task",
    "local_tasks",
    "mcnemar",
    "mean_stderr",
    "resolve_tasks",
    "task_corpus",
    "train_tokenizer",
]
