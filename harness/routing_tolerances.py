"""The routing tolerance table: when a flipped expert choice is a near tie, how far weights may drift.

The numbers are data (``routing_tolerances.toml`` beside this module): one entry per
backend family and dtype, and per-case overrides that must carry a reason.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

from harness.probes.routing_stats import TieEpsilon
from harness.tolerances import ToleranceTableError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

FIELDS = ("tie_atol", "tie_rtol", "weight_atol")
TABLE = "routing_tolerances.toml"


@dataclass(frozen=True)
class RoutingTolerance:
    """The routing limits one check is judged by, and where they came from."""

    tie_atol: float
    tie_rtol: float
    weight_atol: float
    source: str = ""
    reason: str = ""

    @property
    def tie_epsilon(self) -> TieEpsilon:
        return TieEpsilon(self.tie_atol, self.tie_rtol)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _numbers(entry: dict[str, Any], label: str, required: bool) -> dict[str, float]:
    numbers = {}
    for name in FIELDS:
        if name not in entry:
            if required:
                raise ToleranceTableError(f"{label}: field {name!r} is missing")
            continue
        value = entry[name]
        if not isinstance(value, (int, float)) or value < 0:
            raise ToleranceTableError(f"{label}: field {name!r} must be a non-negative number, got {value!r}")
        numbers[name] = float(value)
    return numbers


@cache
def _table() -> tuple[dict[tuple[str, str], RoutingTolerance], tuple[dict[str, Any], ...]]:
    text = resources.files("harness").joinpath(TABLE).read_text(encoding="utf-8")
    document = tomllib.loads(text)
    base = {}
    for index, entry in enumerate(document.get("tolerance", [])):
        label = f"{TABLE}: tolerance[{index}]"
        for name in ("family", "dtype", "reason"):
            if not entry.get(name):
                raise ToleranceTableError(f"{label}: field {name!r} is missing")
        base[(entry["family"], entry["dtype"])] = RoutingTolerance(
            **_numbers(entry, label, required=True),
            source=f"table {entry['family']}/{entry['dtype']}",
            reason=entry["reason"],
        )
    overrides = []
    for index, entry in enumerate(document.get("override", [])):
        label = f"{TABLE}: override[{index}]"
        if not entry.get("reason"):
            raise ToleranceTableError(f"{label}: field 'reason' is missing")
        if not isinstance(entry.get("cases"), list):
            raise ToleranceTableError(f"{label}: field 'cases' must be a list of case ids")
        _numbers(entry, label, required=False)
        overrides.append(entry)
    return base, tuple(overrides)


def routing_tolerance(family: str, dtype: str, case_id: str) -> RoutingTolerance:
    """Return the routing tolerance for (family, dtype), with overrides for ``case_id`` applied.

    A family without entries of its own uses the eager entry of the same dtype.
    """
    base, overrides = _table()
    tolerance = base.get((family, dtype)) or base.get(("eager", dtype))
    if tolerance is None:
        raise ToleranceTableError(f"no routing tolerance for family {family!r} and dtype {dtype!r}; add one to {TABLE}")
    for entry in overrides:
        if case_id not in entry["cases"] or entry.get("family", family) != family or entry.get("dtype", dtype) != dtype:
            continue
        changes = _numbers(entry, "override", required=False)
        tolerance = replace(tolerance, **changes, source=f"override {case_id} {family}/{dtype}", reason=entry["reason"])
    return tolerance
