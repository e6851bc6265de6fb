"""Evaluation tasks: the local task files that ship with the suites, task files given by path, lm-eval names.

A local task is a YAML file in lm-eval's task format whose data files are JSONL files
beside it; it runs offline. A token of ``--tasks`` is a local task name, a path to such a
YAML file, or any other name, which is passed to lm-eval's task registry (for machines
that can download its datasets).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

_TASK_SUFFIXES = (".yaml", ".yml")


class TaskFileError(ValueError):
    """A task file that cannot be read or names data files that do not exist."""


@dataclass(frozen=True)
class EvaluationTask:
    """One task to evaluate: its name, and its lm-eval config when it comes from a file.

    ``config`` is None for a name that lm-eval's registry resolves.
    """

    name: str
    source: str
    config: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def output_type(self) -> str | None:
        return None if self.config is None else self.config.get("output_type")

    def lm_eval_spec(self) -> str | dict[str, Any]:
        """Return what ``simple_evaluate`` takes in its task list: the config dict, or the name."""
        return self.name if self.config is None else copy.deepcopy(self.config)


def load_task_file(path: Path) -> EvaluationTask:
    """Read a task YAML; relative data files are resolved against the file's folder."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise TaskFileError(f"cannot read task file {path}: {error}") from error
    if not isinstance(config, dict) or not config.get("task"):
        raise TaskFileError(f"task file {path} has no 'task' name; see lm-eval's task YAML format")

    data_files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(data_files, dict):
        resolved = {}
        for split, name in data_files.items():
            file = Path(name) if Path(name).is_absolute() else path.parent / name
            if not file.exists():
                raise TaskFileError(f"task file {path}: data file {file} for split {split!r} does not exist")
            resolved[split] = str(file)
        config["dataset_kwargs"]["data_files"] = resolved
    return EvaluationTask(name=str(config["task"]), source=str(path), config=config)


def local_tasks(folder: Path) -> dict[str, EvaluationTask]:
    """Return the task files in ``folder`` by task name, sorted by name."""
    tasks = [load_task_file(path) for suffix in _TASK_SUFFIXES for path in folder.glob(f"*{suffix}")]
    return {task.name: task for task in sorted(tasks, key=lambda task: task.name)}


def resolve_tasks(selector: str | None, folder: Path) -> list[EvaluationTask]:
    """Turn a comma-separated ``--tasks`` value into tasks; None means every local task."""
    local = local_tasks(folder)
    if not selector:
        return list(local.values())

    tasks: list[EvaluationTask] = []
    for token in (token.strip() for token in selector.split(",")):
        if not token:
            continue
        if token in local:
            tasks.append(local[token])
        elif token.endswith(_TASK_SUFFIXES):
            path = Path(token)
            if not path.exists():
                raise TaskFileError(f"task file {token!r} not found; give a path to a task YAML or a task name")
            tasks.append(load_task_file(path))
        else:
            tasks.append(EvaluationTask(name=token, source="lm-eval registry"))
    if not tasks:
        raise TaskFileError(f"empty task selector {selector!r}; local tasks: {', '.join(local)}")
    return tasks


def task_corpus(tasks: list[EvaluationTask]) -> list[str]:
    """Return every string value in the tasks' JSONL data files, in file order."""
    corpus: list[str] = []
    for task in tasks:
        data_files = (task.config or {}).get("dataset_kwargs", {}).get("data_files", {})
        for file in data_files.values() if isinstance(data_files, dict) else []:
            with open(file, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        corpus.extend(_strings(json.loads(line)))
    return corpus


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


@cache
def task_manager(with_registry: bool) -> Any:
    """Return lm-eval's task manager; indexing the registry's thousands of tasks takes seconds, so only when asked."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=with_registry)
