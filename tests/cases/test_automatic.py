"""Automatic cases: discovery, selection, failure categories, and a sample of the sweep run through the suites."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers.models.auto import modeling_auto

from harness.cases import UnknownCaseError, select_cases
from harness.cases.automatic import (
    DEFAULT_CONFIG_FAILS,
    MISSING_DEPENDENCY,
    SHRINKING_INCONSISTENT,
    automatic_case,
    dependency_or,
    not_covered_category,
)
from harness.cases.synthesize import synthesize
from harness.inputs import PLAIN
from harness.report.coverage import coverage_table
from tests.conftest import ROOT

# One type per kind of input and per reason a type does not run: a text decoder, a
# text-and-image model, a waveform encoder, an encoder-decoder, a type whose default config
# does not build (cohere_compass) and one that needs timm (detr).
SAMPLE = ("llama", "llava", "wav2vec2", "t5", "cohere_compass", "detr")


def test_every_automodel_type_has_an_automatic_case():
    cases = select_cases("all-tiny", "cpu")

    assert [case.model_type for case in cases] == list(modeling_auto.MODEL_MAPPING_NAMES)
    assert all("automatic" in case.tags for case in cases)
    assert all(case.id == f"auto-{case.model_type}" for case in cases)


def test_auto_selector_picks_one_type():
    cases = select_cases("auto:llama,llama-tiny", "cpu")

    assert [case.id for case in cases] == ["llama-tiny", "auto-llama"]
    assert "automatic" not in cases[0].tags


def test_unknown_auto_type_names_close_types():
    with pytest.raises(UnknownCaseError, match="'auto:lama' names no model type.*closest model types: .*llama"):
        select_cases("auto:lama", "cpu")


def test_failures_are_classified():
    missing = dependency_or(ImportError("DetrModel requires the timm library but it was not found"), "x", "DetrModel")
    default = dependency_or(KeyError("full_attention"), DEFAULT_CONFIG_FAILS, "on the default config")

    assert missing.category == MISSING_DEPENDENCY
    assert "needs timm" in str(missing)
    assert default.category == DEFAULT_CONFIG_FAILS
    assert not_covered_category(str(default)) == DEFAULT_CONFIG_FAILS
    assert not_covered_category("no golden reference") is None


def test_synthesized_image_placeholders_match_the_image_features():
    from harness.cases import build_case

    built = build_case(automatic_case("llava"))
    inputs = synthesize(built.config, PLAIN)

    image_token = built.config.image_token_id
    placeholders = int((inputs.tensors["input_ids"] == image_token).sum())
    assert inputs.notes["input_groups"] == "text+image"
    assert placeholders > 0
    assert inputs.tensors["input_ids"].shape[1] == PLAIN.seq_len + placeholders // PLAIN.batch_size


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """Run the parity and structure suites on the sample in a subprocess with two pytest-xdist workers."""
    out = tmp_path_factory.mktemp("reports")
    cases = ",".join(f"auto:{model_type}" for model_type in SAMPLE)
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--cases",
        cases,
        "--suites",
        "parity,library_structure",
        "--backends",
        "eager:bf16:eager",
        "--device",
        "cpu",
        "--workers",
        "2",
        "--out",
        str(out),
        "--run-id",
        "sample",
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    from harness.results import load_results
    from harness.runs import results_files

    run_dir = out / "sample"
    files = results_files(run_dir)
    assert files, completed.stdout[-3000:] + completed.stderr[-3000:]
    return run_dir, load_results(files)


def test_sample_gathers_workers_into_one_run(sample_run):
    run_dir, results = sample_run

    # Each worker wrote its own file, and the controller gathered both into results.jsonl.
    assert sorted(path.name for path in run_dir.glob("results*.jsonl")) == ["results.jsonl"]
    assert set(results["case"]) == {f"auto-{model_type}" for model_type in SAMPLE}
    assert (run_dir / "run.json").exists()
    assert "Coverage of model types" in (run_dir / "index.html").read_text()
    assert set(results["run_id"]) == {"sample"}


def test_sample_runs_parity_or_records_a_category(sample_run):
    _, results = sample_run
    parity = results[(results["suite"] == "parity") & results["check"].str.contains("test_parity\\[")]

    for model_type in ("llama", "llava", "wav2vec2", "t5"):
        statuses = set(parity[parity["case"] == f"auto-{model_type}"]["status"])
        assert statuses, model_type
        assert statuses <= {"pass", "fail"}, (model_type, statuses)
    compass = parity[parity["case"] == "auto-cohere_compass"]
    assert {not_covered_category(message) for message in compass["message"]} == {DEFAULT_CONFIG_FAILS}
    detr = parity[parity["case"] == "auto-detr"]
    assert {not_covered_category(message) for message in detr["message"]} == {MISSING_DEPENDENCY}


def test_coverage_table_counts_the_sample(sample_run):
    _, results = sample_run
    table = coverage_table(results)
    parity = table[(table["suite"] == "parity") & (table["dtype"] == "bf16")].iloc[0]

    assert parity["model types"] == len(SAMPLE)
    assert parity["ran"] == 4
    assert parity[DEFAULT_CONFIG_FAILS] == 1
    assert parity[MISSING_DEPENDENCY] == 1
    assert parity[SHRINKING_INCONSISTENT] == 0


def test_default_config_failure_is_a_library_structure_failure(sample_run):
    _, results = sample_run
    structure = results[results["suite"] == "library_structure"]
    compass = structure[
        (structure["case"] == "auto-cohere_compass") & structure["check"].str.contains("test_default_config_builds")
    ].iloc[0]
    llama = structure[(structure["case"] == "auto-llama")].iloc[0]

    assert compass["status"] == "fail"
    assert "the default config does not build: CohereCompassModel on the default config: KeyError" in compass["message"]
    assert llama["status"] == "pass"
