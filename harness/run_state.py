"""The state of one pytest invocation of the harness: its session, run folder and results.

Each process writes its own results file (``results.jsonl``, or ``results-<worker>.jsonl``
under pytest-xdist) and flushes every record, so a crash loses at most the check in
flight. While a check runs, an in-flight file names it. When a process dies (a segmentation
fault, the out-of-memory killer, a hang stopped by pytest-timeout), the controller, or the
next ``--resume``, reads from that file which check it was. At the end the controller
gathers the workers' files into ``results.jsonl``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.backends import UnknownBackendError
from harness.cases import CaseFileError, UnknownCaseError
from harness.environment import result_environment
from harness.paths import default_reports_dir
from harness.results import RESULTS_FILE, Result, ResultsWriter, iter_results, new_run_id, write_run_info
from harness.runs import results_files
from harness.session import HarnessSession, RunOptions, describe_options

log = logging.getLogger(__name__)

INFLIGHT_PREFIX = "inflight-"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def worker_id() -> str | None:
    return os.environ.get("PYTEST_XDIST_WORKER")


@dataclass
class HarnessRun:
    """Per-pytest-invocation state: the session, the results writer, the run folder."""

    config: pytest.Config
    _session: HarnessSession | None = None
    writer: ResultsWriter | None = None
    report_path: Path | None = None
    started_at: str = field(default_factory=now)
    # Check ids a resumed run does not repeat; computed once, then handed to every worker.
    done_checks: frozenset[str] = frozenset()

    @property
    def session(self) -> HarnessSession:
        if self._session is None:
            option = self.config.option
            options = RunOptions(
                cases=option.cases,
                backends=option.backends,
                device=option.device,
                checkpoints=list(option.checkpoint),
                case_files=list(option.case_file),
                references_dir=Path(option.references),
            )
            try:
                self._session = HarnessSession(options)
            except (UnknownCaseError, UnknownBackendError, CaseFileError, ValueError) as error:
                raise pytest.UsageError(str(error)) from None
        return self._session

    @property
    def run_id(self) -> str:
        option = self.config.option
        if option.run_id is None:
            worker_input = getattr(self.config, "workerinput", None)
            option.run_id = (worker_input or {}).get("harness_run_id") or new_run_id()
        return option.run_id

    def output_dir(self) -> Path:
        return Path(self.config.option.out) if self.config.option.out else default_reports_dir()

    @property
    def run_dir(self) -> Path:
        return self.output_dir() / self.run_id

    def results_file(self) -> Path:
        worker = worker_id()
        return self.run_dir / (RESULTS_FILE if worker is None else f"results-{worker}.jsonl")

    def write(self, result: Result) -> None:
        if self.writer is None:
            self.writer = ResultsWriter(self.results_file())
        self.writer.write(result)

    # Checks in flight

    def inflight_file(self, process: str | None = None) -> Path:
        return self.run_dir / f"{INFLIGHT_PREFIX}{process or worker_id() or 'main'}.json"

    def mark_inflight(self, nodeid: str) -> None:
        path = self.inflight_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"check": nodeid, "started": time.time(), "pid": os.getpid()}), encoding="utf-8")

    def clear_inflight(self) -> None:
        self.inflight_file().unlink(missing_ok=True)


def recorded_checks(run_dir: Path) -> frozenset[str]:
    """Return the ids of checks that already have a result in ``run_dir``."""
    return frozenset(result.check for path in results_files(run_dir) for result in iter_results(path))


def describe_crash(inflight: dict[str, Any] | None, timeout: float | None) -> str:
    """Say why a process died while running a check, from its in-flight record."""
    if inflight is None:
        return "the check's process died (a segmentation fault, the out-of-memory killer or an abort)"
    elapsed = time.time() - float(inflight.get("started", time.time()))
    if timeout and elapsed >= timeout:
        return f"the check timed out after {elapsed:.0f} s (limit {timeout:.0f} s) and its process was stopped"
    return (
        f"the check's process died after {elapsed:.0f} s (a segmentation fault, the out-of-memory killer or an "
        "abort); the run went on without it"
    )


def read_inflight(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def crash_result(run: HarnessRun, nodeid: str, message: str) -> Result:
    """Build the error result of a check whose process died, from its node id alone."""
    module, _, rest = nodeid.partition("::")
    suite = Path(module).stem.removeprefix("test_")
    case, backend, input_name = "", "", ""
    if "[" in rest and rest.endswith("]"):
        parts = rest[rest.index("[") + 1 : -1].split("/")
        if len(parts) == 3:
            case, backend, input_name = parts
    return Result(
        run_id=run.run_id,
        suite=suite,
        case=case,
        backend=backend,
        check=nodeid,
        status="error",
        input=input_name,
        message=message,
        environment=result_environment(run.session.environment) if run._session else {},
        started_at=now(),
    )


def gather_worker_results(run_dir: Path) -> None:
    """Append the workers' ``results-<worker>.jsonl`` files to ``results.jsonl``, then delete them.

    The combined file is written beside the target and renamed over it, so a crash while
    gathering leaves every result where it was.
    """
    parts = sorted(run_dir.glob("results-*.jsonl"))
    if not parts:
        return
    target = run_dir / RESULTS_FILE
    partial = run_dir / f"{RESULTS_FILE}.partial"
    with partial.open("w", encoding="utf-8") as combined:
        for path in [target, *parts] if target.exists() else parts:
            text = path.read_text(encoding="utf-8")
            combined.write(text if not text or text.endswith("\n") else text + "\n")
        combined.flush()
        os.fsync(combined.fileno())
    partial.replace(target)
    for path in parts:
        path.unlink()


def finish_run(run: HarnessRun) -> None:
    """Gather the results into one file; write run.json, the HTML report, the CSV and markdown exports."""
    harness_session = run.session
    gather_worker_results(run.run_dir)
    write_run_info(
        run.run_dir,
        {
            "run_id": run.run_id,
            "started_at": run.started_at,
            "finished_at": now(),
            "options": describe_options(harness_session.options),
            "cases": [case.id for case in harness_session.cases],
            "environment": harness_session.environment,
        },
    )
    if run.config.option.no_report:
        return
    from harness.baseline import DEFAULT_THRESHOLDS
    from harness.exports import CSV_FILE, SUMMARY_FILE, markdown_summary, write_table
    from harness.report import AUTO, comparison_for, render_report
    from harness.runs import load_run

    try:
        comparison = comparison_for(run.run_dir, AUTO, DEFAULT_THRESHOLDS)
        run.report_path = render_report(run.run_dir, comparison=comparison)
        finished = load_run(run.run_dir)
        write_table(finished.results, run.run_dir / CSV_FILE, "csv")
        summary = markdown_summary(finished.results, run.run_id, comparison)
        (run.run_dir / SUMMARY_FILE).write_text(summary, encoding="utf-8")
    except Exception:  # noqa: BLE001 - the results are safe on disk; a report bug must not lose them
        log.exception("rendering the report of %s failed; results are in %s", run.run_id, run.run_dir)
