"""The pytest plugin: command-line options, parametrization of checks, result collection, report.

Registered through the ``pytest11`` entry point, so ``pytest suites/ --cases ...`` works
wherever the package is installed. Tests that are not harness checks (the harness's own
tests) are left alone, and no run folder is created unless a check ran.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from harness.backends import VariantSkipped, get_backend, select_variants
from harness.cases import Case, select_cases
from harness.checks import Check, CheckSpec
from harness.collection import check_id, is_check, select_and_order, suite_name
from harness.environment import result_environment
from harness.expected import ExpectedStatusError, load_expected
from harness.inputs import resolve_padding
from harness.probes import profiles  # noqa: F401 - registers the Hypothesis profiles before Hypothesis loads one
from harness.results import Result
from harness.run_state import (
    INFLIGHT_PREFIX,
    HarnessRun,
    crash_result,
    describe_crash,
    finish_run,
    now,
    read_inflight,
    recorded_checks,
    worker_id,
)
from harness.session import HarnessSession
from harness.sharding import ShardError, load_durations, parse_shard

log = logging.getLogger(__name__)


_RUN = pytest.StashKey[HarnessRun]()
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
    group.addoption("--shard", default=None, help="run shard I of N (I/N), split by case and balanced by durations")
    group.addoption(
        "--shard-durations",
        default=None,
        help="run folder or JSON file of seconds per case that balances --shard (default: check counts)",
    )
    group.addoption(
        "--resume", action="store_true", help="continue the run named by --run-id without repeating finished checks"
    )
    group.addoption(
        "--expected",
        default="expected_status.toml",
        help="TOML file of checks known to fail; they run as expected failures (default: expected_status.toml)",
    )
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness_check(spec): a harness check parametrized over case x variant x input")
    run = HarnessRun(config)
    config.stash[_RUN] = run
    worker_input = getattr(config, "workerinput", None)
    if worker_input:
        share_cores(int(worker_input.get("workercount", 1)))
        use_own_gpu(worker_id())
        run.done_checks = frozenset(worker_input.get("harness_done_checks", ()))
    option = config.option
    if option.cases or option.backends or option.checkpoint or option.case_file:
        # Validate the selection now, so a typo is one usage error line rather than a collection error.
        run.session  # noqa: B018 - building the session validates the options
    _validate_fp16_options(option)
    if not worker_input:
        _validate_run_files(option)
    if option.resume and not worker_input:
        _prepare_resume(run)


def _validate_run_files(option: Any) -> None:
    """Read the shard and expected-status options before any worker starts.

    Collection reads them again in every process; a bad value found there would end each
    pytest-xdist worker with a traceback instead of one usage error line.
    """
    try:
        if option.shard:
            parse_shard(option.shard)
        if option.shard_durations:
            load_durations(Path(option.shard_durations))
        load_expected(Path(option.expected))
    except (ShardError, ExpectedStatusError) as error:
        raise pytest.UsageError(str(error)) from None


def _prepare_resume(run: HarnessRun) -> None:
    """Read what the interrupted run finished; record a check a crash left in flight as an error."""
    if run.config.option.run_id is None:
        raise pytest.UsageError("--resume continues an earlier run: name it with --run-id")
    if not run.run_dir.is_dir():
        raise pytest.UsageError(f"--resume: run folder {run.run_dir} not found; check --out and --run-id")
    for path in sorted(run.run_dir.glob(f"{INFLIGHT_PREFIX}*.json")):
        inflight = read_inflight(path)
        if inflight and inflight.get("check") not in recorded_checks(run.run_dir):
            message = "the check's process died in an earlier attempt of this run: " + describe_crash(inflight, None)
            run.write(crash_result(run, inflight["check"], message))
        path.unlink(missing_ok=True)
    run.done_checks = recorded_checks(run.run_dir)


def use_own_gpu(worker: str | None) -> None:
    """Give each pytest-xdist worker its own GPU when there are several (gw0 the first, gw1 the next)."""
    import torch

    if worker is None or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return
    index = int(worker.removeprefix("gw")) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    log.info("pytest-xdist worker %s uses GPU %d", worker, index)


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
    """Hand each pytest-xdist worker the run id and the finished checks of a resumed run.

    Every worker, a replacement for a crashed one included, must collect the same checks,
    so the finished checks are read once here rather than by each worker.
    """
    run = node.config.stash[_RUN]
    node.workerinput["harness_run_id"] = run.run_id
    node.workerinput["harness_done_checks"] = sorted(run.done_checks)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule a harness run's ``--dist loadgroup`` with a scheduler that survives crashed workers."""
    if config.option.dist != "loadgroup":
        return None
    from harness.scheduling import CaseGroupScheduling

    return CaseGroupScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: Any, sched: Any) -> None:
    """Record the check a crashed pytest-xdist worker was running as an error; the run goes on."""
    run = report.node.config.stash[_RUN] if hasattr(report, "node") else None
    if run is None:
        return
    worker = report.node.gateway.id
    inflight = read_inflight(run.inflight_file(worker))
    timeout = getattr(run.config.option, "timeout", None)
    run.write(crash_result(run, check_id(crashitem), describe_crash(inflight, float(timeout) if timeout else None)))
    run.inflight_file(worker).unlink(missing_ok=True)


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
        once = [(get_backend(reference.backend), reference)]
        narrowed = [variant for _, variant in select_variants(narrowing, case, session.device)] if narrowing else None
        for backend, variant in once if spec.variants == "once" else session.variants(case):
            if spec.families is not None and backend.family not in spec.families:
                continue
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


# Before pytest-xdist's own hook, which turns the xdist_group marks added here into node ids.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(is_check(item) for item in items):
        return
    run = config.stash[_RUN]
    case_order = {case.id: index for index, case in enumerate(run.session.cases)}
    select_and_order(config, items, case_order, run.done_checks)


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
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Name the check in flight in a file, so a crash of this process can be traced to it."""
    run = item.config.stash[_RUN]
    tracked = is_check(item)
    if tracked:
        run.mark_inflight(check_id(item.nodeid))
    yield
    if tracked:
        run.clear_inflight()


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
        check=check_id(item.nodeid),
        status=status,
        input=check.input_spec.name,
        metrics={"backend_family": backend.family, **check.variant.as_dict(), **check.metrics},
        thresholds=check.thresholds,
        margin=check.margin,
        message=message,
        duration_s=round(sum(report.duration for report, _ in phases.values()), 4),
        environment=result_environment(run.session.environment),
        tags=sorted(check.case.tags),
        started_at=now(),
    )
    run.write(result)


def classify(phases: dict[str, Any]) -> tuple[str, str]:
    """Map pytest's phase reports to a result status and a one-paragraph message."""
    for when in ("setup", "call", "teardown"):
        if when not in phases:
            continue
        report, excinfo = phases[when]
        if report.failed:
            if excinfo is not None and _is_timeout(excinfo.value):
                return "error", f"the check timed out: {_exception_message(excinfo.value, with_type=False)}"
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


def _is_timeout(error: BaseException) -> bool:
    """Return whether pytest-timeout ended the check (its signal method fails it with "Timeout >N s")."""
    return isinstance(error, pytest.fail.Exception) and str(getattr(error, "msg", "")).startswith("Timeout")


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
    if worker_id() is not None:
        return
    # Under pytest-xdist the workers wrote results-<worker>.jsonl; the controller gathers and reports them.
    if not run.run_dir.is_dir() or not any(run.run_dir.glob("results*.jsonl")):
        return
    finish_run(run)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is None or not run.run_dir.is_dir():
        return
    files = sorted(run.run_dir.glob("results*.jsonl"))
    if not files:
        return
    terminalreporter.write_sep("-", "harness")
    terminalreporter.write_line(f"results: {files[0] if len(files) == 1 else run.run_dir}")
    if run.report_path is not None:
        terminalreporter.write_line(f"report: {run.report_path}")
