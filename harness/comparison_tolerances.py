"""The accuracy and latency tolerance tables: what a variant may lose against the eager fp32 reference.

The tables are data (``comparison_tolerances.toml`` beside this module). An entry names a
backend family, or ``*`` for any, and may narrow itself to a dtype or a backend. The
entry that names the most of the three wins, so a quantization scheme's own entry beats
its family's.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from harness.accuracy.statistics import PairedComparison
from harness.backends import Variant
from harness.timing import Speedup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TABLE_FILE = "comparison_tolerances.toml"
_KEYS = ("family", "dtype", "backend")


class ComparisonTableError(ValueError):
    """A malformed entry in the accuracy or latency table; the message names the entry and field."""


@dataclass(frozen=True)
class AccuracyTolerance:
    """How much accuracy a variant may lose, and how often a random-weight case must agree with the reference."""

    max_drop: float
    min_agreement: float
    significance_level: float
    source: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyTolerance:
    """The slowest a variant may be, as a speedup over the reference (1 is as fast)."""

    min_speedup: float
    source: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def _document() -> dict[str, Any]:
    text = resources.files("harness").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    document = tomllib.loads(text)
    for table, criteria in (("accuracy", ("max_drop", "min_agreement")), ("latency", ("min_speedup",))):
        for index, entry in enumerate(document.get(table, [])):
            _validate(entry, f"{TABLE_FILE}: {table}[{index}]", criteria)
    level = document.get("significance_level")
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ComparisonTableError(f"{TABLE_FILE}: significance_level must be a number between 0 and 1, got {level!r}")
    return document


def _validate(entry: dict[str, Any], label: str, criteria: tuple[str, ...]) -> None:
    for name in ("family", "reason", *criteria):
        if name not in entry or entry[name] == "":
            raise ComparisonTableError(f"{label}: field {name!r} is missing")
    for name in criteria:
        value = entry[name]
        if not isinstance(value, (int, float)) or value < 0:
            raise ComparisonTableError(f"{label}: field {name!r} must be a non-negative number, got {value!r}")


def _best_entry(table: str, variant: Variant, family: str) -> tuple[dict[str, Any], str]:
    """Return the most specific entry of ``table`` that matches, and a label saying which it is."""
    actual = {"family": family, "dtype": variant.dtype, "backend": variant.backend}
    best: dict[str, Any] | None = None
    best_score = -1
    for entry in _document().get(table, []):
        named = {key: entry[key] for key in _KEYS if key in entry and entry[key] != "*"}
        if any(actual[key] != value for key, value in named.items()):
            continue
        if len(named) > best_score:
            best, best_score = entry, len(named)
    if best is None:
        return {}, ""
    label = "/".join(str(best.get(key, "*")) for key in _KEYS if key in best)
    return best, f"{table} {label}"


def accuracy_tolerance_for(variant: Variant, family: str) -> AccuracyTolerance:
    """Return the accuracy tolerance of ``variant``, whose backend belongs to ``family``."""
    entry, source = _best_entry("accuracy", variant, family)
    if not entry:
        raise ComparisonTableError(
            f"no accuracy entry matches {variant.id} (family {family!r}); add one to {TABLE_FILE}"
        )
    return AccuracyTolerance(
        max_drop=float(entry["max_drop"]),
        min_agreement=float(entry["min_agreement"]),
        significance_level=float(_document()["significance_level"]),
        source=source,
        reason=entry["reason"],
    )


def latency_tolerance_for(variant: Variant, family: str) -> LatencyTolerance | None:
    """Return the latency tolerance of ``variant``, or None when its family and dtype are not judged."""
    entry, source = _best_entry("latency", variant, family)
    if not entry:
        return None
    return LatencyTolerance(min_speedup=float(entry["min_speedup"]), source=source, reason=entry["reason"])


@dataclass(frozen=True)
class ComparisonVerdict:
    """The outcome of judging a variant against its tolerance; ``message`` explains a failure, ``notes`` a pass."""

    passed: bool
    margin: float
    limiting: str
    message: str = ""
    notes: tuple[str, ...] = ()


def judge_accuracy(comparison: PairedComparison, tolerance: AccuracyTolerance, reference_id: str) -> ComparisonVerdict:
    """Judge a trained model's drop: fail when it exceeds ``max_drop`` and the paired test is significant."""
    drop = -comparison.delta
    margin = 1.0 - max(_fraction(drop, tolerance.max_drop), 0.0)
    summary = (
        f"accuracy {comparison.score:.3f} ± {comparison.score_stderr:.3f} against {comparison.reference_score:.3f} "
        f"for {reference_id}: drop {drop:.3f}, allowed {tolerance.max_drop:g}"
    )
    test = comparison.test
    if drop <= tolerance.max_drop:
        return ComparisonVerdict(True, margin, "max_drop")
    if test is None:
        return ComparisonVerdict(False, margin, "max_drop", f"{summary} (no paired test: the metric is not 0 or 1)")

    evidence = f"{test.test} p = {test.p_value:.2g}, {test.worse} items worse and {test.better} better"
    if test.p_value < tolerance.significance_level:
        return ComparisonVerdict(False, margin, "max_drop", f"{summary}; {evidence}")
    note = f"{summary}, but the drop is not significant ({evidence}, level {tolerance.significance_level:g})"
    return ComparisonVerdict(True, margin, "max_drop", notes=(note,))


def judge_agreement(comparison: PairedComparison, tolerance: AccuracyTolerance, reference_id: str) -> ComparisonVerdict:
    """Judge a random-weight model by the fraction of items answered as the reference answered them."""
    disagreement = 1.0 - comparison.agreement
    margin = 1.0 - _fraction(disagreement, 1.0 - tolerance.min_agreement)
    if comparison.agreement >= tolerance.min_agreement:
        return ComparisonVerdict(True, margin, "min_agreement")
    differing = round(disagreement * comparison.items)
    message = (
        f"agreement with {reference_id} {comparison.agreement:.3f} < {tolerance.min_agreement:g} "
        f"({differing} of {comparison.items} answers differ)"
    )
    return ComparisonVerdict(False, margin, "min_agreement", message)


def _fraction(used: float, allowed: float) -> float:
    """Return ``used`` as a fraction of ``allowed``; any use of a zero allowance is infinite."""
    if allowed > 0:
        return used / allowed
    if used > 0:
        return math.inf
    return 0.0


def judge_latency(result: Speedup, tolerance: LatencyTolerance, reference_id: str) -> ComparisonVerdict:
    """Fail when the whole confidence interval of the speedup lies below ``min_speedup``."""
    margin = result.high / tolerance.min_speedup - 1.0 if tolerance.min_speedup > 0 else math.inf
    if result.high >= tolerance.min_speedup:
        return ComparisonVerdict(True, margin, "min_speedup")
    message = f"{result.describe()} against {reference_id}, below the allowed {tolerance.min_speedup:g}"
    return ComparisonVerdict(False, margin, "min_speedup", message)
