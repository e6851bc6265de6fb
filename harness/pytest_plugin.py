"""The pytest plugin: command-line options, parametrization of checks, result collection, report.

Registered through the ``pytest11`` entry point, so ``pytest suites/ --cases ...`` works
wherever the package is installed. Tests that are not harness checks (the harness's own
tests) are left alone, and no run folder is created unless a check ran.
"""

from __future__ import annotations

import datetime as _datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.backends import UnknownBackendError, VariantSkipped, get_backend, select_variants
from harness.cases import Case, CaseFileError, UnknownCaseError, select_cases
from harness.checks import Check, CheckSpec
from harness.environment import result_environment
from harness.inputs import resolve_padding
from harness.paths import default_reports_dir
from harness.probes import profiles  # noqa: F401 - registers the Hypothesis profiles before Hypothesis loads one
from harness.results import RESULTS_FILE, Result, ResultsWriter, new_run_id, write_run_info
from harness.session import HarnessSession, RunOptions, describe_options

log = logging.getLogger(__name__)


_RUN = pytest.StashKey["HarnessRun"]()
_CHECK = pytest.StashKey[Check]()
_PHASES = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "Transformers conformance harness")
    group.addoption("--cases", default=None, help="comma-separated case ids, 'default', 'curated' or 'tag:<tag>'")
    group.addoption("--backends", default=None, help="comma-separated variant selectors such as eager or eager:bf16")
    group.addoption(
        "--suites", default=None, help="comma-separated suite names (default: the suites that set RUN_BY_DEFAULT)"
    )
    group.addoption("--device", default="auto", help="cpu, cuda or auto (cuda when visible)")
    group.addoption("--out", default=None, help="folder that receives <run-id>/results.jsonl and index.html")
    group.addoption("--run-id", default=None, help="name of the run folder (default: a timestamp)")
    group.addoption("--checkpoint", action="append", default=[], help="a local checkpoint folder to run as a case")
    group.addoption("--case-file", action="append", default=[], help="a TOML file declaring extra cases")
    group.addoption("--references", default="reference_outputs", help="folder of golden reference files")
    group.addoption("--no-report", action="store_true", help="write results but no HTML report")
    group.addoption(
        "--stress-profiles",
        default="default",
        help="fp16_overflow stress profiles: comma-separated names, 'default', 'all' or 'none' (unedited weights only)",
    )
    group.addoption(
        "--fp16-margin",
        type=float,
        default=4.0,
        help="fp16_overflow warns when the lowest fp16 headroom (65504 / max |x|) is below this factor",
    )
    group.addoption(
        "--tasks",
        default=None,
        help="comma-separated evaluation tasks for the accuracy suite: local task names, task YAML files, "
        "or lm-eval task names (default: the local tasks under suites/tasks)",
    )


@dataclass
class HarnessRun:
    """Per-pytest-invocation state: the session, the results writer, the run folder."""

    config: pytest.Config
    _session: HarnessSession | None = None
    writer: ResultsWriter | None = None
    run_dir: Path | None = None
    report_path: Path | None = None
    started_at: str = field(default_factory=lambda: _now())

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

    def results_file(self) -> Path:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        name = RESULTS_FILE if worker is None else f"results-{worker}.jsonl"
        return self.output_dir() / self.run_id / name

    def output_dir(self) -> Path:
        return Path(self.config.option.out) if self.config.option.out else default_reports_dir()

    def write(self, result: Result) -> None:
        if self.writer is None:
            self.run_dir = self.output_dir() / self.run_id
            self.writer = ResultsWriter(self.results_file())
        self.writer.write(result)


def _now() -> str:
    return _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness_check(spec): a harness check parametrized over case x variant x input")
    run = HarnessRun(config)
    config.stash[_RUN] = run
    worker_input = getattr(config, "workerinput", None)
    if worker_input:
        share_cores(int(worker_input.get("workercount", 1)))
    option = config.option
    if option.cases or option.backends or option.checkpoint or option.case_file:
        # Validate the selection now, so a typo is one usage error line rather than a collection error.
        run.session  # noqa: B018 - building the session validates the options
    _validate_fp16_options(option)


def _validate_fp16_options(option: Any) -> None:
    from harness.stress import select_profiles

    try:
        select_profiles(option.stress_profiles)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    if not option.fp16_margin >= 1.0:
        raise pytest.UsageError(
            f"--fp16-margin {option.fp16_margin!r} is invalid; give a headroom factor of at least 1, such as 4"
        )


def share_cores(workers: int) -> None:
    """Give each of ``workers`` pytest-xdist workers an equal share of the CPU cores for torch's threads.

    Every process otherwise starts one thread per core; with several workers the threads
    oversubscribe the cores, and tiny models then run tens of times slower.
    """
    import torch

    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    torch.set_num_threads(threads)
    log.info("pytest-xdist worker uses %d torch threads (%d workers)", threads, workers)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand the run id to each pytest-xdist worker, so that every worker writes into one run folder."""
    node.workerinput["harness_run_id"] = node.config.stash[_RUN].run_id


def is_xdist_controller(config: pytest.Config) -> bool:
    """Return whether this process hands checks to pytest-xdist workers instead of running them."""
    return config.pluginmanager.hasplugin("dsession")


def suite_name(module: Any) -> str:
    """Return a suite module's name: its SUITE attribute, else the file name without ``test_``.

    A suite module also sets ``RUN_BY_DEFAULT = True`` to run when ``--suites`` is not given.
    """
    declared = getattr(module, "SUITE", None)
    if declared:
        return str(declared)
    return module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("harness_check")
    if marker is None:
        return
    spec: CheckSpec = marker.args[0]
    session = metafunc.config.stash[_RUN].session

    cases, narrowing = default_run_slice(metafunc, session)
    params = []
    for case in cases:
        if spec.applies_to is not None and not spec.applies_to(case):
            continue
        reference = session.reference_variant(case)
        pads_left = case.is_decoder and "encoder" not in case.tags
        variants = [reference] if spec.variants == "once" else [variant for _, variant in session.variants(case)]
        narrowed = [variant for _, variant in select_variants(narrowing, case, session.device)] if narrowing else None
        for variant in variants:
            if narrowed is not None and variant not in narrowed:
                continue
            if spec.variants == "non-reference" and variant == reference:
                continue
            if spec.variants == "reference" and variant != reference:
                continue
            if spec.dtypes is not None and variant.dtype not in spec.dtypes:
                continue
            for input_spec in spec.inputs:
                resolved = resolve_padding(input_spec, case.inputs, pads_left)
                if resolved is None:
                    continue
                params.append(pytest.param(case, variant, resolved, id=f"{case.id}/{variant.id}/{resolved.name}"))
    metafunc.parametrize("case,variant,input_spec", params)


def default_run_slice(metafunc: pytest.Metafunc, session: HarnessSession) -> tuple[list[Case], str | None]:
    """Return the cases a suite's checks cover, and a backend selector that narrows its variants (or None).

    When ``--suites`` is not given, an expensive suite narrows the default run to a slice
    of itself with the module attributes ``DEFAULT_RUN_CASES`` and ``DEFAULT_RUN_BACKENDS``
    (selectors, as ``--cases`` and ``--backends`` take). A selection the run names
    (``--cases`` or ``--checkpoint``, ``--backends``) replaces the suite's narrowing.
    """
    option = metafunc.config.option
    if option.suites:
        return session.cases, None
    cases = session.cases
    default_cases = getattr(metafunc.module, "DEFAULT_RUN_CASES", None)
    if default_cases and not option.cases and not option.checkpoint:
        wanted = {case.id for case in select_cases(default_cases, session.device, session.extra_cases)}
        cases = [case for case in cases if case.id in wanted]
    narrowing = None if option.backends else getattr(metafunc.module, "DEFAULT_RUN_BACKENDS", None)
    return cases, narrowing


def is_check(item: pytest.Item) -> bool:
    """Return whether ``item`` is a harness check with a case (a parameter set left empty has none)."""
    if item.get_closest_marker("harness_check") is None or not hasattr(item, "callspec"):
        return False
    return isinstance(item.callspec.params.get("case"), Case)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    checks = [item for item in items if is_check(item)]
    if not checks:
        return
    known = sorted({suite_name(item.module) for item in checks})
    requested = config.option.suites
    if requested:
        wanted = _parse_suites(requested, known)
    else:
        wanted = sorted({suite_name(item.module) for item in checks if getattr(item.module, "RUN_BY_DEFAULT", False)})

    kept, deselected = [], []
    for item in items:
        if is_check(item) and suite_name(item.module) not in wanted:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)

    # Group checks by case, then variant, so each model is prepared once and released early.
    run = config.stash[_RUN]
    case_order = {case.id: index for index, case in enumerate(run.session.cases)}

    def order(item: pytest.Item) -> tuple:
        params = item.callspec.params
        return (case_order.get(params["case"].id, 0), params["variant"].id, suite_name(item.module))

    check_items = sorted((item for item in kept if is_check(item)), key=order)
    others = [item for item in kept if not is_check(item)]
    items[:] = others + check_items


def _parse_suites(requested: str, known: list[str]) -> list[str]:
    names = [name.strip() for name in requested.split(",") if name.strip()]
    for name in names:
        if name not in known:
            raise pytest.UsageError(f"unknown suite {name!r}; known suites: {', '.join(known)}")
    return names


@pytest.fixture(scope="session")
def harness(request: pytest.FixtureRequest) -> HarnessSession:
    """The run's shared state: selected cases, built and prepared models, references."""
    return request.config.stash[_RUN].session


@pytest.fixture(scope="session")
def run_dir(request: pytest.FixtureRequest) -> Path:
    """The run's folder (``<out>/<run-id>``), where checks may keep files of their own."""
    run = request.config.stash[_RUN]
    return run.output_dir() / run.run_id


@pytest.fixture
def check(request: pytest.FixtureRequest) -> Check:
    """The result the running check records into."""
    return _check_of(request.node)


@pytest.fixture
def prepared(harness: HarnessSession, case: Any, variant: Any) -> Any:
    """The prepared model of this check's (case, variant); skips with the reason when it cannot run here."""
    try:
        return harness.prepared(case, variant)
    except VariantSkipped as skipped:
        pytest.skip(str(skipped))


def _check_of(item: pytest.Item) -> Check:
    if _CHECK not in item.stash:
        params = item.callspec.params
        item.stash[_CHECK] = Check(
            suite=suite_name(item.module),
            case=params["case"],
            variant=params["variant"],
            input_spec=params["input_spec"],
        )
    return item.stash[_CHECK]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    if not is_check(item):
        return
    report = outcome.get_result()
    phases = item.stash.setdefault(_PHASES, {})
    phases[report.when] = (report, call.excinfo)
    if report.when == "teardown":
        _write_result(item, phases)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if not is_check(item):
        return
    if nextitem is None or not is_check(nextitem) or nextitem.callspec.params["case"] != item.callspec.params["case"]:
        item.config.stash[_RUN].session.release()


def _write_result(item: pytest.Item, phases: dict[str, Any]) -> None:
    check = _check_of(item)
    status, message = classify(phases)
    if check.notes:
        message = "; ".join([message, *check.notes]) if message else "; ".join(check.notes)
    run = item.config.stash[_RUN]
    backend = get_backend(check.variant.backend)
    result = Result(
        run_id=run.run_id,
        suite=check.suite,
        case=check.case.id,
        backend=check.variant.id,
        check=item.nodeid,
        status=status,
        input=check.input_spec.name,
        metrics={"backend_family": backend.family, **check.variant.as_dict(), **check.metrics},
        thresholds=check.thresholds,
        margin=check.margin,
        message=message,
        duration_s=round(sum(report.duration for report, _ in phases.values()), 4),
        environment=result_environment(run.session.environment),
        tags=sorted(check.case.tags),
        started_at=_now(),
    )
    run.write(result)


def classify(phases: dict[str, Any]) -> tuple[str, str]:
    """Map pytest's phase reports to a result status and a one-paragraph message."""
    for when in ("setup", "call", "teardown"):
        if when not in phases:
            continue
        report, excinfo = phases[when]
        if report.failed:
            if when == "call" and excinfo is not None and _is_assertion(excinfo.value):
                return "fail", _exception_message(excinfo.value, with_type=False)
            prefix = "" if when == "call" else f"in {when}: "
            return "error", prefix + (_exception_message(excinfo.value) if excinfo else str(report.longrepr))
        if report.skipped:
            if hasattr(report, "wasxfail"):
                return "xfail", report.wasxfail or "expected failure"
            return "skip", _skip_reason(report)
    report, _ = phases.get("call", phases["setup"])
    if hasattr(report, "wasxfail"):
        return "pass", f"passed although expected to fail: {report.wasxfail}"
    return "pass", ""


def _is_assertion(error: BaseException) -> bool:
    return isinstance(error, (AssertionError, pytest.fail.Exception))


def _exception_message(error: BaseException, with_type: bool = True) -> str:
    text = getattr(error, "msg", None) or str(error)
    text = text.strip()
    if len(text) > 2000:
        text = text[:2000] + " ..."
    return f"{type(error).__name__}: {text}" if with_type else text


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(_RUN, None)
    if run is None:
        return
    if run.writer is not None:
        run.writer.close()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if run.writer is None:
        # Under pytest-xdist the workers wrote results-<worker>.jsonl; the controller reports them.
        if not is_xdist_controller(session.config):
            return
        run.run_dir = run.output_dir() / run.run_id
        if not any(run.run_dir.glob("results*.jsonl")):
            return
    _finish_run(run)


def _finish_run(run: HarnessRun) -> None:
    assert run.run_dir is not None
    harness_session = run.session
    write_run_info(
        run.run_dir,
        {
            "run_id": run.run_id,
            "started_at": run.started_at,
            "finished_at": _now(),
            "options": describe_options(harness_session.options),
            "cases": [case.id for case in harness_session.cases],
            "environment": harness_session.environment,
        },
    )
    if run.config.option.no_report:
        return
    from harness.report import render_report

    try:
        run.report_path = render_report(run.run_dir)
    except Exception:  # noqa: BLE001 - the results are safe on disk; a report bug must not lose them
        log.exception("rendering the report of %s failed; results are in %s", run.run_id, run.run_dir)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is None or run.run_dir is None:
        return
    terminalreporter.write_sep("-", "harness")
    files = sorted(run.run_dir.glob("results*.jsonl"))
    terminalreporter.write_line(f"results: {files[0] if len(files) == 1 else run.run_dir}")
    if run.report_path is not None:
        terminalreporter.write_line(f"report: {run.report_path}")
