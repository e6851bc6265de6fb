"""Compare a run with a baseline run: status changes, metric regressions, trends, what changed.

Checks are matched by their id (the pytest node id, which names suite, case, variant and
input). A regression must be more than noise:

- a margin (the fraction of its tolerance a check had left) counts as a regression when it
  dropped by more than ``margin_drop`` of the tolerance;
- a timed metric ``X`` recorded with a confidence interval (``X_ci_low``, ``X_ci_high``)
  counts when the two runs' intervals do not overlap and the median moved by more than
  ``latency_change`` (a fraction); lower is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.runs import Run

FAILING = ("fail", "error")
# Environment fields whose change can explain a difference between runs.
ENVIRONMENT_FIELDS = ("device", "gpu", "driver", "cuda", "cpu", "python")


@dataclass(frozen=True)
class Thresholds:
    """How large a change must be to count as a regression."""

    margin_drop: float = 0.25
    latency_change: float = 0.10
    history: int = 10


@dataclass
class StatusChange:
    check: str
    case: str
    backend: str
    suite: str
    input: str
    before: str
    after: str
    kind: str
    message: str = ""


@dataclass
class Regression:
    check: str
    case: str
    backend: str
    suite: str
    metric: str
    before: float
    after: float
    detail: str


@dataclass
class Comparison:
    """Everything the report's comparison section shows."""

    run_id: str
    baseline_id: str
    environment_changes: list[tuple[str, str, str]] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    new_checks: int = 0
    removed_checks: int = 0
    trends: pd.DataFrame | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.status_changes or self.regressions)


def _by_check(results: pd.DataFrame) -> dict[str, Any]:
    return {row.check: row for row in results.itertuples()}


def environment_changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return (name, before, after) for every library version or device fact that changed."""
    old_environment, new_environment = before.get("environment", {}), after.get("environment", {})
    old_versions, new_versions = old_environment.get("versions", {}), new_environment.get("versions", {})
    changes = []
    for name in sorted(set(old_versions) | set(new_versions)):
        if old_versions.get(name) != new_versions.get(name):
            changes.append((name, str(old_versions.get(name, "absent")), str(new_versions.get(name, "absent"))))
    for name in ENVIRONMENT_FIELDS:
        if old_environment.get(name) != new_environment.get(name):
            changes.append((name, str(old_environment.get(name, "absent")), str(new_environment.get(name, "absent"))))
    return changes


def _status_kind(before: str, after: str, history: list[str]) -> str | None:
    failing = [status in FAILING for status in history]
    flips = sum(1 for index in range(1, len(failing)) if failing[index] != failing[index - 1])
    if before == after:
        return None
    if flips >= 2:
        return "flaky"
    if after in FAILING and before not in FAILING:
        return "new failure"
    if before in FAILING and after == "pass":
        return "fixed"
    if before == "xfail" and after == "pass":
        return "fixed (expected to fail)"
    if after in FAILING:
        return "failure changed"
    return f"{before} to {after}"


def _margin_regression(check: str, old: Any, new: Any, thresholds: Thresholds) -> Regression | None:
    before, after = old.margin, new.margin
    if not _finite(before) or not _finite(after) or before - after <= thresholds.margin_drop:
        return None
    return Regression(
        check,
        new.case,
        new.backend,
        new.suite,
        "margin",
        before,
        after,
        f"margin {before:.2f} -> {after:.2f}: {100 * (before - after):.0f}% more of the tolerance consumed",
    )


def _timed_regressions(check: str, old: Any, new: Any, thresholds: Thresholds) -> list[Regression]:
    regressions = []
    for name, value in (new.metrics or {}).items():
        low, high = f"{name}_ci_low", f"{name}_ci_high"
        if low not in new.metrics or name not in (old.metrics or {}) or low not in old.metrics:
            continue
        before, after = old.metrics[name], value
        if not (_finite(before) and _finite(after)) or before <= 0:
            continue
        separated = new.metrics[low] > old.metrics[high]
        change = after / before - 1
        if separated and change > thresholds.latency_change:
            regressions.append(
                Regression(
                    check,
                    new.case,
                    new.backend,
                    new.suite,
                    name,
                    before,
                    after,
                    f"{name} {before:.4g} -> {after:.4g} (+{100 * change:.0f}%); confidence intervals "
                    f"[{old.metrics[low]:.4g}, {old.metrics[high]:.4g}] and "
                    f"[{new.metrics[low]:.4g}, {new.metrics[high]:.4g}] do not overlap",
                )
            )
    return regressions


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


DEFAULT_THRESHOLDS = Thresholds()


def compare_runs(
    current: Run, baseline: Run, history: list[Run] = (), thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> Comparison:
    """Compare ``current`` with ``baseline``; ``history`` (newest first) feeds flakiness and trends."""
    comparison = Comparison(run_id=current.run_id, baseline_id=baseline.run_id)
    comparison.environment_changes = environment_changes(baseline.info, current.info)

    before_checks, after_checks = _by_check(baseline.results), _by_check(current.results)
    older = [_by_check(run.results) for run in history]
    comparison.new_checks = len(set(after_checks) - set(before_checks))
    comparison.removed_checks = len(set(before_checks) - set(after_checks))

    for check, new in after_checks.items():
        old = before_checks.get(check)
        if old is None:
            continue
        statuses = [runs[check].status for runs in reversed(older) if check in runs] + [old.status, new.status]
        kind = _status_kind(old.status, new.status, statuses)
        if kind is not None:
            change = StatusChange(
                check, new.case, new.backend, new.suite, new.input, old.status, new.status, kind, new.message
            )
            comparison.status_changes.append(change)
            continue
        if new.status != "pass":
            continue
        regression = _margin_regression(check, old, new, thresholds)
        if regression is not None:
            comparison.regressions.append(regression)
        comparison.regressions.extend(_timed_regressions(check, old, new, thresholds))

    comparison.trends = margin_trends([*reversed(history), baseline, current])
    return comparison


def margin_trends(runs: list[Run]) -> pd.DataFrame:
    """Return the lowest margin per case in each run (oldest first): a key metric over time."""
    rows = []
    for run in runs:
        frame = run.results
        if frame.empty or "margin" not in frame:
            continue
        margins = frame.dropna(subset=["margin"]).groupby("case")["margin"].min()
        for case, margin in margins.items():
            rows.append({"run": run.run_id, "case": case, "min_margin": margin})
    return pd.DataFrame(rows, columns=["run", "case", "min_margin"])
