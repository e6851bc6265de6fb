"""The ``harness`` command: run, list, report, refs.

``harness run`` runs pytest on the suites with the plugin's options and prints where the
report went; everything a run does is also reachable as ``pytest suites/ --cases ...``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import harness
from harness.paths import default_reports_dir

log = logging.getLogger("harness")


class CommandError(Exception):
    """A bad argument or missing input; printed as one line, exit status 2."""


def suites_dir(explicit: str | None = None) -> Path:
    """Find the suites folder: the given one, the checkout beside the package, or ./suites."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path(harness.__file__).resolve().parent.parent / "suites", Path.cwd() / "suites"]
    for candidate in candidates:
        if (candidate / "test_parity.py").exists():
            return candidate
    if explicit:
        raise CommandError(f"--suites-dir {explicit!r} holds no suite modules (test_*.py)")
    raise CommandError("cannot find the suites folder; run from the harness checkout or pass --suites-dir")


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", help="comma-separated case ids, 'default', 'curated' or 'tag:<tag>'")
    parser.add_argument("--backends", help="comma-separated variant selectors, such as eager or eager:bf16")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="where models run")
    parser.add_argument("--checkpoint", action="append", default=[], help="local checkpoint folder to run as a case")
    parser.add_argument("--case-file", action="append", default=[], help="TOML file declaring extra cases")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Conformance and benchmark harness for Transformers models"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is built and run, with timings")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run suites and write results.jsonl and an HTML report")
    _add_selection(run)
    run.add_argument("--suites", help="comma-separated suite names (default: the suites run by default)")
    run.add_argument("--tasks", help="accuracy suite tasks: local task names, task YAML files or lm-eval task names")
    run.add_argument(
        "--out", default=str(default_reports_dir()), help="folder that receives <run-id>/ (default: reports)"
    )
    run.add_argument("--run-id", help="name of the run folder (default: a timestamp)")
    run.add_argument("--suites-dir", help="folder of suite modules (default: the checkout's suites/)")
    run.add_argument("--references", default="reference_outputs", help="folder of golden reference files")
    run.add_argument(
        "--workers",
        default="1",
        help="pytest-xdist worker processes that run the checks ('auto': one per CPU core); a worker that "
        "crashes is replaced and its check recorded as an error. 0 runs in this process (default: 1)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds one check may run before it is stopped and recorded as an error (default: 1800; 0: none)",
    )
    run.add_argument("--shard", help="run shard I of N (I/N): cases split deterministically, balanced by durations")
    run.add_argument("--shard-durations", help="run folder or JSON file of seconds per case that balances --shard")
    run.add_argument(
        "--resume", action="store_true", help="continue the run named by --run-id without repeating finished checks"
    )
    run.add_argument(
        "--expected", default="expected_status.toml", help="TOML file of checks known to fail (run as xfail)"
    )
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after '--'")

    listing = commands.add_parser("list", help="list cases, backends or suites")
    listing.add_argument("what", choices=("cases", "backends", "suites"))
    listing.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    listing.add_argument("--case-file", action="append", default=[], help="TOML file declaring extra cases")
    listing.add_argument("--suites-dir", help="folder of suite modules")

    report = commands.add_parser("report", help="render the HTML report of a run, compared with a baseline run")
    report.add_argument("run", help="run folder (reports/<run-id>) or a run id under --out")
    report.add_argument("--out", default=str(default_reports_dir()), help="folder that holds run folders")
    baseline = report.add_mutually_exclusive_group()
    baseline.add_argument("--baseline", help="run to compare with (default: the previous run in the same folder)")
    baseline.add_argument("--no-baseline", action="store_true", help="compare with no other run")
    report.add_argument(
        "--margin-drop",
        type=float,
        default=0.25,
        help="margin drop (fraction of tolerance) that counts as a regression",
    )
    report.add_argument(
        "--latency-change", type=float, default=0.10, help="slowdown (fraction) that counts when intervals separate"
    )
    report.add_argument("--history", type=int, default=10, help="earlier runs used for flakiness and trends")

    merge = commands.add_parser("merge", help="combine shard runs into one run and render its report")
    merge.add_argument("runs", nargs="+", help="shard run folders or run ids under --out")
    merge.add_argument("--out", default=str(default_reports_dir()), help="folder that holds run folders")
    merge.add_argument("--run-id", help="name of the merged run (default: a timestamp)")

    export = commands.add_parser("export", help="write a run's results as csv, parquet or a markdown summary")
    export.add_argument("run", help="run folder or a run id under --out")
    export.add_argument("--out", default=str(default_reports_dir()), help="folder that holds run folders")
    export.add_argument("--format", choices=("csv", "parquet", "markdown"), default="csv")
    export.add_argument("--output", help="file to write (default: in the run folder; '-' prints markdown)")

    expected = commands.add_parser("expected", help="manage the file of checks known to fail")
    expected_commands = expected.add_subparsers(dest="expected_command", required=True)
    expected_update = expected_commands.add_parser("update", help="list a run's failing checks, drop fixed ones")
    expected_update.add_argument("run", help="run folder or a run id under --out")
    expected_update.add_argument("--out", default=str(default_reports_dir()), help="folder that holds run folders")
    expected_update.add_argument("--file", default="expected_status.toml", help="expected-status file to rewrite")
    expected_update.add_argument("--reason", help="reason recorded for newly listed checks")

    refs = commands.add_parser("refs", help="manage golden reference files")
    refs_commands = refs.add_subparsers(dest="refs_command", required=True)
    update = refs_commands.add_parser("update", help="write golden references for cases and variants")
    _add_selection(update)
    update.add_argument("--references", default="reference_outputs", help="folder to write into")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # torchao logs a warning per CUDA-only extension it cannot load on CPU machines, and
    # torch one per enum torchao registers; neither concerns a harness run.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "list":
            return command_list(args)
        if args.command == "report":
            return command_report(args)
        if args.command == "refs":
            return command_refs_update(args)
        if args.command == "merge":
            return command_merge(args)
        if args.command == "export":
            return command_export(args)
        if args.command == "expected":
            return command_expected_update(args)
    except (CommandError, ValueError, FileNotFoundError) as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def command_run(args: argparse.Namespace) -> int:
    # Only light modules may be imported before pytest.main: pytest cannot rewrite the
    # asserts of plugins already imported (transformers pulls in anyio's).
    import pytest

    from harness.results import new_run_id

    if args.resume and not args.run_id:
        raise CommandError("--resume continues an earlier run: name it with --run-id")
    run_id = args.run_id or new_run_id()
    pytest_args = [
        str(suites_dir(args.suites_dir)),
        "--out",
        args.out,
        "--run-id",
        run_id,
        "--device",
        args.device,
        "--references",
        args.references,
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(suites_dir(args.suites_dir).parent),
    ]
    for option in ("cases", "backends", "suites", "tasks"):
        value = getattr(args, option)
        if value:
            pytest_args += [f"--{option}", value]
    for path in args.checkpoint:
        pytest_args += ["--checkpoint", path]
    for path in args.case_file:
        pytest_args += ["--case-file", path]
    for option in ("shard", "shard_durations", "expected"):
        value = getattr(args, option)
        if value:
            pytest_args += [f"--{option.replace('_', '-')}", value]
    if args.resume:
        pytest_args.append("--resume")
    pytest_args += ["--junitxml", str(Path(args.out) / run_id / "junit.xml")]
    workers = worker_args(args.workers)
    pytest_args += workers
    pytest_args += timeout_args(args.timeout, isolated=bool(workers))
    pytest_args += list(args.pytest_args)

    # The plugin's terminal summary prints the paths of the results and the report.
    status = int(pytest.main(pytest_args))
    if status in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        return 2
    return status


def worker_args(workers: str | None) -> list[str]:
    """Return the pytest-xdist arguments for ``--workers``; none for 0 (run in this process)."""
    if workers is None or workers == "0":
        return []
    if workers != "auto" and not (workers.isdigit() and int(workers) > 0):
        raise CommandError(f"--workers {workers!r} is not a non-negative integer or 'auto'")
    if importlib.util.find_spec("xdist") is None:
        raise CommandError(f"--workers {workers} needs pytest-xdist; install it with: pip install pytest-xdist")
    # loadgroup keeps each case's checks on one worker; crashed workers are replaced, as
    # many times as it takes, since each crash costs only its check.
    return ["-n", workers, "--dist", "loadgroup", "--max-worker-restart", "1000"]


def timeout_args(seconds: float, isolated: bool) -> list[str]:
    """Return pytest-timeout arguments: stop a check after ``seconds``.

    In a worker the thread method ends the whole process, which also stops a hang inside
    native code, and the controller records the check as timed out. In this process the
    signal method fails the check instead, which cannot interrupt native code.
    """
    if seconds <= 0:
        return []
    if importlib.util.find_spec("pytest_timeout") is None:
        raise CommandError("--timeout needs pytest-timeout; install it with: pip install pytest-timeout")
    return ["--timeout", f"{seconds:g}", "--timeout-method", "thread" if isolated else "signal"]


def command_list(args: argparse.Namespace) -> int:
    from harness import listing

    if args.what == "cases":
        rows = listing.case_rows(args.device, args.case_file)
    elif args.what == "backends":
        rows = listing.backend_rows(args.device)
    else:
        rows = listing.suite_rows(suites_dir(args.suites_dir))
    print(listing.format_rows(rows))
    return 0


def command_report(args: argparse.Namespace) -> int:
    from harness.baseline import Thresholds
    from harness.report import AUTO, render_report
    from harness.runs import resolve_run

    run_dir = resolve_run(args.run, Path(args.out))
    baseline = None if args.no_baseline else (resolve_run(args.baseline, Path(args.out)) if args.baseline else AUTO)
    thresholds = Thresholds(margin_drop=args.margin_drop, latency_change=args.latency_change, history=args.history)
    print(f"report: {render_report(run_dir, baseline=baseline, thresholds=thresholds)}")
    return 0


def command_merge(args: argparse.Namespace) -> int:
    from harness.report import render_report
    from harness.results import new_run_id
    from harness.runs import resolve_run
    from harness.sharding import merge_runs

    shards = [resolve_run(reference, Path(args.out)) for reference in args.runs]
    merged = merge_runs(shards, Path(args.out), args.run_id or new_run_id())
    print(f"merged {len(shards)} runs into {merged}")
    print(f"report: {render_report(merged, baseline=None)}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from harness.exports import CSV_FILE, SUMMARY_FILE, markdown_summary, write_table
    from harness.runs import load_run, resolve_run

    run = load_run(resolve_run(args.run, Path(args.out)))
    if args.format == "markdown":
        text = markdown_summary(run.results, run.run_id)
        if args.output == "-":
            print(text, end="")
            return 0
        path = Path(args.output) if args.output else run.folder / SUMMARY_FILE
        path.write_text(text, encoding="utf-8")
    else:
        default = run.folder / (CSV_FILE if args.format == "csv" else "results.parquet")
        path = write_table(run.results, Path(args.output) if args.output else default, args.format)
    print(f"wrote {path}")
    return 0


def command_expected_update(args: argparse.Namespace) -> int:
    from harness.expected import update_expected
    from harness.runs import load_run, resolve_run

    run = load_run(resolve_run(args.run, Path(args.out)))
    update = update_expected(Path(args.file), run.results, run.run_id, args.reason)
    print(
        f"{args.file}: {len(update.added)} added, {len(update.removed)} removed as fixed, "
        f"{len(update.kept)} still failing"
    )
    return 0


def command_refs_update(args: argparse.Namespace) -> int:
    from harness.backends import VariantSkipped
    from harness.inputs import PLAIN
    from harness.probes.compare import primary_output
    from harness.references import write_reference
    from harness.session import HarnessSession, RunOptions

    options = RunOptions(
        cases=args.cases,
        backends=args.backends,
        device=args.device,
        checkpoints=args.checkpoint,
        case_files=args.case_file,
    )
    session = HarnessSession(options)
    folder = Path(args.references)
    written = 0
    for case in session.cases:
        for _, variant in session.variants(case):
            try:
                prepared = session.prepared(case, variant)
            except VariantSkipped as skipped:
                print(f"skipped {case.id} {variant.id}: {skipped}")
                continue
            output = primary_output(prepared.forward(session.inputs(case, PLAIN)))
            path = write_reference(folder, case, variant, PLAIN, output, session.environment["versions"])
            written += 1
            log.info("wrote %s", path)
        session.release()
    print(f"wrote {written} golden reference{'' if written == 1 else 's'} under {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
