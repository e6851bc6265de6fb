"""Evaluation tasks: the local task files, their items, and how --tasks tokens resolve."""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path

import pytest

from harness.accuracy import TaskFileError, local_tasks, resolve_tasks, task_corpus

TASKS_DIR = Path(__file__).resolve().parents[2] / "suites" / "tasks"
MULTIPLE_CHOICE = "harness_facts_mc"
GENERATION = "harness_facts_gen"


def items(name: str) -> list[dict]:
    lines = (TASKS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_local_tasks_are_found_with_resolved_data_files():
    tasks = local_tasks(TASKS_DIR)

    assert list(tasks) == [GENERATION, MULTIPLE_CHOICE]
    data_file = Path(tasks[MULTIPLE_CHOICE].config["dataset_kwargs"]["data_files"]["test"])
    assert data_file.is_absolute()
    assert data_file.exists()
    assert tasks[MULTIPLE_CHOICE].output_type == "multiple_choice"
    assert tasks[GENERATION].output_type == "generate_until"


def test_multiple_choice_items_have_four_distinct_choices():
    rows = items(MULTIPLE_CHOICE)

    assert len(rows) >= 200
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        assert len(row["choices"]) == 4, row["id"]
        assert len(set(row["choices"])) == 4, row["id"]
        assert 0 <= row["answer"] < 4, row["id"]


def test_multiple_choice_answers_are_spread_over_positions():
    positions = [row["answer"] for row in items(MULTIPLE_CHOICE)]

    for position in range(4):
        assert positions.count(position) > len(positions) / 8


def test_arithmetic_answers_are_correct():
    operations = {"plus": operator.add, "minus": operator.sub, "times": operator.mul}
    rows = [row for row in items(MULTIPLE_CHOICE) if row["topic"] == "arithmetic"]

    assert len(rows) >= 50
    for row in rows:
        left, word, right = re.fullmatch(r"(\d+) (plus|minus|times) (\d+) equals", row["question"]).groups()
        expected = operations[word](int(left), int(right))
        assert row["choices"][row["answer"]] == str(expected), row["id"]


def test_generation_items_have_one_word_answers():
    rows = items(GENERATION)

    assert len(rows) >= 20
    for row in rows:
        assert re.fullmatch(r"[A-Za-z]+", row["answer"]), row["id"]


def test_no_selector_means_every_local_task():
    assert [task.name for task in resolve_tasks(None, TASKS_DIR)] == [GENERATION, MULTIPLE_CHOICE]


def test_selector_mixes_local_file_and_registry_names(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    task_file = tmp_path / "mine.yaml"
    task_file.write_text("task: my_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\n")

    tasks = resolve_tasks(f"{MULTIPLE_CHOICE},{task_file},arc_easy", TASKS_DIR)

    assert [task.name for task in tasks] == [MULTIPLE_CHOICE, "my_task", "arc_easy"]
    assert tasks[1].config["dataset_kwargs"]["data_files"]["test"] == str(data)
    assert tasks[2].config is None
    assert tasks[2].lm_eval_spec() == "arc_easy"


def test_missing_task_file_is_an_error_naming_it():
    with pytest.raises(TaskFileError, match="task file 'nowhere.yaml' not found"):
        resolve_tasks("nowhere.yaml", TASKS_DIR)


def test_missing_data_file_is_an_error(tmp_path):
    task_file = tmp_path / "broken.yaml"
    task_file.write_text("task: broken\ndataset_kwargs:\n  data_files:\n    test: gone.jsonl\n")

    with pytest.raises(TaskFileError, match="gone.jsonl for split 'test' does not exist"):
        resolve_tasks(str(task_file), TASKS_DIR)


def test_corpus_holds_questions_and_answers():
    corpus = task_corpus(list(local_tasks(TASKS_DIR).values()))

    assert "The capital of France is" in corpus
    assert "Paris" in corpus
