"""Selection and order of the collected checks.

Applied in order: the requested suites, checks a resumed run already finished, the shard
this process runs, and checks known to fail (marked as expected failures). Then the checks
are ordered by case and variant, so each model is prepared once and released early.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.cases import Case
from harness.expected import ExpectedStatusError, load_expected
from harness.sharding import ShardError, assign_cases, load_durations, parse_shard


def is_check(item: pytest.Item) -> bool:
    """Return whether ``item`` is a harness check with a case (a parameter set left empty has none)."""
    if item.get_closest_marker("harness_check") is None or not hasattr(item, "callspec"):
        return False
    return isinstance(item.callspec.params.get("case"), Case)


def check_id(nodeid: str) -> str:
    """Return a check's id: its node id without the ``@group`` suffix pytest-xdist's loadgroup adds."""
    bracket, at = nodeid.rfind("]"), nodeid.rfind("@")
    return nodeid[:at] if at > bracket else nodeid


def suite_name(module: Any) -> str:
    """Return a suite module's name: its SUITE attribute, else the file name without ``test_``.

    A suite module also sets ``RUN_BY_DEFAULT = True`` to run when ``--suites`` is not given.
    """
    declared = getattr(module, "SUITE", None)
    if declared:
        return str(declared)
    return module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


def case_of(item: pytest.Item) -> Case:
    return item.callspec.params["case"]


def wanted_suites(requested: str | None, checks: list[pytest.Item]) -> list[str]:
    known = sorted({suite_name(item.module) for item in checks})
    if not requested:
        return sorted({suite_name(item.module) for item in checks if getattr(item.module, "RUN_BY_DEFAULT", False)})
    names = [name.strip() for name in requested.split(",") if name.strip()]
    for name in names:
        if name not in known:
            raise pytest.UsageError(f"unknown suite {name!r}; known suites: {', '.join(known)}")
    return names


def shard_filter(option: Any, checks: list[pytest.Item]) -> set[str] | None:
    """Return the case ids this shard runs, or None when the run is not sharded."""
    if not option.shard:
        return None
    try:
        index, count = parse_shard(option.shard)
        durations = load_durations(Path(option.shard_durations)) if option.shard_durations else None
    except ShardError as error:
        raise pytest.UsageError(str(error)) from None
    counts = Counter(case_of(item).id for item in checks)
    assignment = assign_cases(dict(counts), count, durations)
    return {case for case, shard in assignment.items() if shard == index}


def mark_expected_failures(path: Path, checks: list[pytest.Item]) -> None:
    """Mark the checks listed in the expected-status file as expected failures (not strict)."""
    try:
        expectations = load_expected(path)
    except ExpectedStatusError as error:
        raise pytest.UsageError(str(error)) from None
    for item in checks:
        expectation = expectations.get(check_id(item.nodeid))
        if expectation is not None:
            item.add_marker(pytest.mark.xfail(reason=expectation.reason, strict=False))


def select_and_order(
    config: pytest.Config, items: list[pytest.Item], case_order: dict[str, int], done: frozenset[str]
) -> None:
    """Deselect, mark and reorder ``items`` in place."""
    checks = [item for item in items if is_check(item)]
    if not checks:
        return
    option = config.option
    suites = wanted_suites(option.suites, checks)
    in_suites = [item for item in checks if suite_name(item.module) in suites]
    shard_cases = shard_filter(option, in_suites)

    def runs_here(item: pytest.Item) -> bool:
        if suite_name(item.module) not in suites or check_id(item.nodeid) in done:
            return False
        return shard_cases is None or case_of(item).id in shard_cases

    kept = [item for item in items if not is_check(item) or runs_here(item)]
    deselected = [item for item in items if is_check(item) and not runs_here(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)

    kept_checks = [item for item in kept if is_check(item)]
    mark_expected_failures(Path(option.expected), kept_checks)
    for item in kept_checks:
        # pytest-xdist's loadgroup scheduling keeps a case's checks on one worker.
        item.add_marker(pytest.mark.xdist_group(case_of(item).id))

    def order(item: pytest.Item) -> tuple:
        params = item.callspec.params
        return (case_order.get(params["case"].id, 0), params["variant"].id, suite_name(item.module))

    others = [item for item in kept if not is_check(item)]
    items[:] = others + sorted(kept_checks, key=order)
