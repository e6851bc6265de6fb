"""The tolerance table and the verdict of a comparison against it.

Tolerances are data (``tolerances.toml`` beside this module): one entry per backend family
(or per backend, where one backend of a family needs its own limits, as each quantization
scheme does) and dtype, and per-case overrides that must carry a reason. Every verdict records the
tolerance it used, where that tolerance came from, and the margin left.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

from harness.probes.compare import OutputComparison

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CRITERIA = ("atol", "rtol", "max_rmse_ratio", "min_cosine", "min_top1", "max_kl")
# The dtype of a table entry that leaves out its dtype: it applies to every dtype.
ANY_DTYPE = "*"

# Machine epsilon per dtype: the noise floor measured in fp32 is scaled by eps(dtype) /
# eps(fp32) before it judges a lower-precision variant.
EPSILON = {"fp32": 2.0**-23, "fp64": 2.0**-52, "bf16": 2.0**-7, "fp16": 2.0**-10}


class ToleranceTableError(ValueError):
    """A tolerance table entry that is malformed; the message names the entry and field."""


@dataclass(frozen=True)
class Tolerance:
    """The limits one check is judged by, and where they came from."""

    atol: float | None = None
    rtol: float | None = None
    max_rmse_ratio: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None
    max_kl: float | None = None
    source: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None and value != ""}


@dataclass
class Verdict:
    """The outcome of judging a comparison: pass or not, the margin, and what failed."""

    passed: bool
    margin: float
    limiting: str
    failures: list[str] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)


def _validate_entry(entry: dict[str, Any], label: str, required: tuple[str, ...]) -> None:
    for name in required:
        if not entry.get(name):
            raise ToleranceTableError(f"{label}: field {name!r} is missing")
    for name in CRITERIA:
        value = entry.get(name)
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ToleranceTableError(f"{label}: field {name!r} must be a non-negative number, got {value!r}")


@cache
def _table() -> tuple[dict[tuple[str, str], Tolerance], tuple[dict[str, Any], ...]]:
    text = resources.files("harness").joinpath("tolerances.toml").read_text(encoding="utf-8")
    document = tomllib.loads(text)
    base: dict[tuple[str, str], Tolerance] = {}
    for index, entry in enumerate(document.get("tolerance", [])):
        label = f"tolerances.toml: tolerance[{index}]"
        _validate_entry(entry, label, ("reason",))
        # An entry names a family or, more narrowly, backends (one or a list). An entry
        # without a dtype fits every dtype.
        keys = entry.get("backend") or entry.get("family")
        if not keys:
            raise ToleranceTableError(f"{label}: field 'family' (or 'backend') is missing")
        dtype = entry.get("dtype", ANY_DTYPE)
        criteria = {name: float(entry[name]) for name in CRITERIA if name in entry}
        for key in [keys] if isinstance(keys, str) else keys:
            base[(key, dtype)] = Tolerance(**criteria, source=f"table {key}/{dtype}", reason=entry["reason"])
    overrides = []
    for index, entry in enumerate(document.get("override", [])):
        label = f"tolerances.toml: override[{index}]"
        _validate_entry(entry, label, ("cases", "reason"))
        if not isinstance(entry["cases"], list):
            raise ToleranceTableError(f"{label}: field 'cases' must be a list of case ids")
        overrides.append(entry)
    return base, tuple(overrides)


def tolerance_for(family: str, dtype: str, case_id: str, backend: str | None = None) -> Tolerance:
    """Return the tolerance for a (family, dtype) pair, with overrides for ``case_id`` applied.

    Lookup order: the backend's own entry for the dtype, its entry for any dtype, the
    family's for the dtype, the family's for any dtype, then eager's for the dtype.
    """
    base, overrides = _table()
    keys = [(backend, dtype), (backend, ANY_DTYPE)] if backend else []
    keys += [(family, dtype), (family, ANY_DTYPE), ("eager", dtype)]
    tolerance = next((base[key] for key in keys if key in base), None)
    if tolerance is None:
        raise ToleranceTableError(f"no tolerance for family {family!r} and dtype {dtype!r}; add one to tolerances.toml")
    for entry in overrides:
        if (
            case_id not in entry["cases"]
            or not _names(entry, "family", family)
            or not _names(entry, "backend", backend)
            or entry.get("dtype", dtype) != dtype
        ):
            continue
        changes = {name: float(entry[name]) for name in CRITERIA if name in entry}
        source = f"override {case_id} {backend if entry.get('backend') else family}/{dtype}"
        tolerance = replace(tolerance, **changes, source=source, reason=entry["reason"])
    return tolerance


def _names(entry: dict[str, Any], field: str, value: str | None) -> bool:
    """Return whether an override's ``field`` (one name, a list of names, or absent) covers ``value``."""
    wanted = entry.get(field)
    if wanted is None:
        return True
    return value in ([wanted] if isinstance(wanted, str) else wanted)


def judge(comparison: OutputComparison, tolerance: Tolerance, dtype: str) -> Verdict:
    """Judge a comparison; the margin is 1 minus the largest fraction of any limit used."""
    usage: dict[str, float] = {}
    failures: list[str] = []

    def check(name: str, used: float, text: str) -> None:
        usage[name] = used
        if not used <= 1.0:
            failures.append(text)

    if comparison.nonfinite:
        failures.append(f"{comparison.nonfinite} non-finite values where the reference is finite")
        usage["nonfinite"] = math.inf

    if tolerance.atol is not None or tolerance.rtol is not None:
        allowed = (tolerance.atol or 0.0) + (tolerance.rtol or 0.0) * comparison.reference_max_abs
        check(
            "max_abs_error",
            _fraction(comparison.max_abs_error, allowed),
            f"max abs error {comparison.max_abs_error:.3g} > allowed {allowed:.3g}",
        )
    if tolerance.max_rmse_ratio is not None and comparison.rmse_vs_float64 is not None:
        floor = (comparison.noise_floor_rmse or 0.0) * EPSILON[dtype] / EPSILON["fp32"]
        allowed = tolerance.max_rmse_ratio * floor + (tolerance.atol or 0.0) / 10
        check(
            "rmse_ratio",
            _fraction(comparison.rmse_vs_float64, allowed),
            f"RMSE against fp64 {comparison.rmse_vs_float64:.3g} > allowed {allowed:.3g}",
        )
    if tolerance.min_cosine is not None:
        check(
            "cosine",
            _fraction(1.0 - comparison.cosine, 1.0 - tolerance.min_cosine),
            f"cosine {comparison.cosine:.6f} < {tolerance.min_cosine}",
        )
    if tolerance.min_top1 is not None and comparison.top1_agreement is not None:
        check(
            "top1_agreement",
            _fraction(1.0 - comparison.top1_agreement, 1.0 - tolerance.min_top1),
            f"top-1 agreement {comparison.top1_agreement:.3f} < {tolerance.min_top1}",
        )
    if tolerance.max_kl is not None and comparison.kl_divergence is not None:
        check(
            "kl_divergence",
            _fraction(comparison.kl_divergence, tolerance.max_kl),
            f"KL divergence {comparison.kl_divergence:.3g} > {tolerance.max_kl}",
        )

    limiting = max(usage, key=lambda name: usage[name]) if usage else ""
    margin = 1.0 - usage[limiting] if usage else 1.0
    return Verdict(passed=not failures, margin=margin, limiting=limiting, failures=failures, usage=usage)


def _fraction(used: float, allowed: float) -> float:
    if not math.isfinite(used):
        return math.inf
    if allowed <= 0:
        return 0.0 if used <= 0 else math.inf
    return max(used, 0.0) / allowed
