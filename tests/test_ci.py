"""The CI entry point and the nightly GitHub Actions workflow."""

from __future__ import annotations

import configparser
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_matches_the_github_actions_schema():
    pytest.importorskip("check_jsonschema")
    completed = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_workflow_runs_nightly_on_configurable_gpu_runners(workflow):
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads "on" as true
    assert triggers["schedule"][0]["cron"]
    shard = workflow["jobs"]["shard"]
    assert "vars.HARNESS_GPU_RUNNER_LABELS" in shard["runs-on"]
    assert shard["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    run_steps = " ".join(step.get("run", "") for step in shard["steps"])
    assert "tox -e gpu" in run_steps
    assert "--shard ${{ matrix.shard }}/${{ strategy.job-total }}" in run_steps


def test_merge_job_publishes_report_and_summary(workflow):
    merge = workflow["jobs"]["merge"]
    assert merge["needs"] == "shard"
    assert merge["if"] == "always()"
    run_steps = " ".join(step.get("run", "") for step in merge["steps"])
    assert "tox -e report -- merge shards/shard-*" in run_steps
    assert "GITHUB_STEP_SUMMARY" in run_steps
    uploads = [step for step in merge["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads


def test_tox_defines_the_environments_the_workflow_calls():
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tox.ini")
    assert {"testenv:gpu", "testenv:report", "testenv:run"} <= set(config.sections())
    assert "harness run --device cuda" in config["testenv:gpu"]["commands"]


def test_ci_entry_point_calls_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m tox\n" in script
    assert 'python3 -m pip install "tox>=4.11" && python3 -m tox ' in readme


def test_report_commands_run_without_torch(tmp_path):
    """The nightly merge job has no torch; merging and rendering must not import it."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from harness.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text(
        '{"run_id": "r1", "suite": "parity", "case": "c", "backend": "b", "check": "x", "status": "pass"}\n'
    )
    for arguments in (
        ["merge", "r1", "--out", str(tmp_path), "--run-id", "m"],
        ["export", "m", "--out", str(tmp_path)],
    ):
        completed = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=ROOT)
        assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "m" / "index.html").exists()
    assert (tmp_path / "m" / "results.csv").exists()
