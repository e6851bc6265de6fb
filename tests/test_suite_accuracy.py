"""The accuracy suite end to end: paired comparison with the reference, planted answer flips caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.backends import register_backend, unregister_backend
from suites.test_accuracy import evaluation_tokenizer
from tests.planted_comparisons import FlippingBackend

ACCURACY = ("test_accuracy.py",)
TASKS_DIR = Path(__file__).resolve().parents[1] / "suites" / "tasks"
# The flipped subset: items whose prompt mentions a capital.
MARKER = " capital"


@pytest.fixture
def flipping_backend():
    backend = FlippingBackend(MARKER, evaluation_tokenizer)
    register_backend(backend)
    yield backend
    unregister_backend(backend.name)


@pytest.fixture
def small_task(tmp_path: Path) -> Path:
    """A 40-item multiple-choice task cut from the local one: 12 capitals, 28 items of other topics."""
    rows = [json.loads(line) for line in (TASKS_DIR / "harness_facts_mc.jsonl").read_text().splitlines()]
    capitals = [row for row in rows if row["topic"] == "capitals"][:12]
    others = [row for row in rows if row["topic"] != "capitals"][::5][:28]
    (tmp_path / "small_mc.jsonl").write_text("".join(json.dumps(row) + "\n" for row in capitals + others))

    config = yaml.safe_load((TASKS_DIR / "harness_facts_mc.yaml").read_text())
    config["task"] = "small_mc"
    config["dataset_kwargs"]["data_files"] = {"test": "small_mc.jsonl"}
    path = tmp_path / "small_mc.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_default_run_evaluates_smollm2_in_fp32_and_bf16(run_suites):
    run = run_suites("--co", "-q", suites=ACCURACY)

    collected = sorted(line for line in run.stdout.splitlines() if "::test_accuracy[" in line)
    assert collected == [
        f"suites/test_accuracy.py::test_accuracy[{task}-smollm2-135m/{variant}/plain]"
        for task in ("harness_facts_gen", "harness_facts_mc")
        for variant in ("eager:bf16:sdpa", "eager:fp32:eager")
    ]


def test_unknown_task_file_is_a_usage_error(run_suites):
    run = run_suites("--cases", "llama-tiny", "--suites", "accuracy", "--tasks", "missing.yaml", suites=ACCURACY)

    assert run.exit_code == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: task file 'missing.yaml' not found" in run.stderr


def test_random_weights_are_judged_by_agreement(run_suites, small_task):
    run = run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "eager:fp32:eager,eager:bf16:sdpa",
        "--suites",
        "accuracy",
        "--tasks",
        str(small_task),
        suites=ACCURACY,
    )
    result = run.result(backend="eager:bf16:sdpa")
    metrics = result["metrics"]

    assert result["status"] == "pass"
    assert result["input"] == "small_mc"
    assert metrics["weights"] == "random"
    assert metrics["items"] == 40
    assert metrics["reference"] == "eager:fp32:eager"
    assert metrics["limiting"] == "min_agreement"
    assert result["thresholds"]["source"] == "accuracy eager/bf16"
    assert metrics["agreement"] >= result["thresholds"]["min_agreement"]


def test_flipped_answers_lower_agreement_of_random_weights(run_suites, small_task, flipping_backend):
    run = run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "eager:fp32:eager,flipping:fp32:eager",
        "--suites",
        "accuracy",
        "--tasks",
        str(small_task),
        suites=ACCURACY,
    )
    result = run.result(backend="flipping:fp32:eager")

    assert result["status"] == "fail"
    assert result["message"].startswith("agreement with eager:fp32:eager ")
    assert result["metrics"]["agreement"] < result["thresholds"]["min_agreement"]
    assert result["margin"] < 0


def test_flipped_answers_drop_accuracy_significantly(run_suites, small_task, flipping_backend):
    run = run_suites(
        "--cases",
        "smollm2-135m",
        "--backends",
        "eager:fp32:eager,flipping:fp32:eager",
        "--suites",
        "accuracy",
        "--tasks",
        str(small_task),
        suites=ACCURACY,
    )
    reference = run.result(backend="eager:fp32:eager")
    result = run.result(backend="flipping:fp32:eager")
    metrics = result["metrics"]

    assert reference["status"] == "pass"
    assert reference["metrics"]["weights"] == "trained"
    assert result["status"] == "fail"
    assert metrics["delta"] < -0.1
    assert metrics["p_value"] < 0.01
    assert metrics["items_worse"] >= 8
    # Only flipped items change: a capital the model got wrong may come out right when flipped.
    assert metrics["items_better"] <= 2
    assert all(item.startswith("capitals-") for item in metrics["worse_items"])
    assert f"items worse: {metrics['worse_items'][0]}" in result["message"]
    assert "mcnemar-exact p = " in result["message"]
