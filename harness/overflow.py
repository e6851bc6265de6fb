"""Float16 overflow runs: a prepared model under each stress profile, recorded module by module, and judged.

:class:`OverflowRunner` plans each profile once per case on the float32 reference, runs
the reference and the variant with the same edits and every module's range recorded,
and returns one :class:`ProfileRun` per profile. :func:`judge` turns those runs into a
verdict:

- fail when the variant produced a non-finite value where the float32 reference, on the
  same weights and inputs, was finite. The message names the first such module and the
  range of its inputs;
- warn (the result passes, with ``warned`` set and a note) when the lowest float16
  headroom falls below the margin, 4x by default;
- the three lowest-headroom modules are recorded in every result.

bfloat16 runs are recorded beside float16 for contrast: their headroom says what float16
would have faced, and only a non-finite value fails them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.cases import BuiltCase, Case, load_model
from harness.inputs import ModelInputs
from harness.probes.compare import primary_output
from harness.probes.headroom import (
    Headroom,
    ModuleRange,
    NonFinite,
    first_nonfinite,
    headroom_of,
    lowest_headroom,
    recording_ranges,
)
from harness.stress import (
    BASELINE,
    EditNotApplicable,
    Measurement,
    PlanningContext,
    StressPlan,
    StressProfile,
    WeightEdit,
    applied,
    short_names,
)

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 4.0
# Dtype names as the recorder writes them, per variant dtype: the tensors whose headroom counts.
COUNTED_DTYPES = {"fp16": frozenset({"float16"}), "bf16": frozenset({"bfloat16"})}
LOWEST_COUNT = 3


@dataclass
class ProfileRun:
    """One profile's run of a variant, beside the float32 reference on the same edits."""

    plan: StressPlan
    records: list[ModuleRange] = field(default_factory=list)
    reference_records: list[ModuleRange] = field(default_factory=list)
    nonfinite: NonFinite | None = None
    output_nonfinite: int = 0
    lowest: list[Headroom] = field(default_factory=list)
    skipped: str | None = None

    @property
    def profile(self) -> str:
        return self.plan.profile

    @property
    def failed(self) -> bool:
        return self.nonfinite is not None or self.output_nonfinite > 0

    def summary(self) -> dict[str, Any]:
        if self.skipped:
            return {"status": "skipped", "reason": self.skipped, "rationale": self.plan.rationale}
        summary: dict[str, Any] = {
            "status": "non-finite" if self.failed else "finite",
            "plan": self.plan.describe(),
            "rationale": self.plan.rationale,
            "lowest_headroom": self.lowest[0].headroom if self.lowest else None,
        }
        if self.nonfinite is not None:
            summary["first_nonfinite"] = self.nonfinite.describe()
        return summary


@dataclass
class Verdict:
    """The outcome a result records: failure message, warnings, metrics, margin."""

    failure: str | None
    warnings: list[str]
    metrics: dict[str, Any]
    margin: float | None


def _headroom_margin(headroom: float) -> float:
    """Return 1 - max|x| / FP16_MAX: the fraction of the float16 range left, negative past it."""
    if headroom == 0:
        return -math.inf
    return 1.0 - 1.0 / headroom


def judge(runs: Sequence[ProfileRun], dtype: str, margin: float = DEFAULT_MARGIN) -> Verdict:
    """Judge a variant's profile runs; float16 warns below ``margin``, both dtypes fail on non-finite values."""
    ran = [run for run in runs if run.skipped is None]
    lowest = sorted(
        ((run.profile, headroom) for run in ran for headroom in run.lowest), key=lambda item: item[1].headroom
    )
    metrics: dict[str, Any] = {
        "profiles": {run.profile: run.summary() for run in runs},
        "lowest_headroom_modules": [
            {**headroom.as_dict(), "profile": profile} for profile, headroom in _distinct(lowest)[:LOWEST_COUNT]
        ],
        "headroom_by_module": {run.profile: _profile_points(run, dtype) for run in ran},
    }
    if lowest:
        profile, worst = lowest[0]
        metrics.update(
            lowest_headroom=worst.headroom,
            lowest_headroom_module=worst.module,
            lowest_headroom_profile=profile,
        )

    failure = None
    failed = [run for run in ran if run.failed]
    if failed:
        run = failed[0]
        where = run.nonfinite.describe() if run.nonfinite else "the model output is non-finite (no module recorded)"
        failure = f"{dtype} turned non-finite where fp32 stayed finite, under profile {_plan_text(run.plan)}; {where}"
        if run.nonfinite is not None:
            metrics.update(first_nonfinite_module=run.nonfinite.module, first_nonfinite_profile=run.profile)

    warnings = []
    if dtype == "fp16" and lowest and not failed and lowest[0][1].headroom < margin:
        profile, worst = lowest[0]
        warnings.append(
            f"warning: lowest fp16 headroom {worst.headroom:.3g}x is below the {margin:g}x margin, at "
            f"{worst.module or '(model)'} [{worst.class_name}] ({worst.tensor}, max |x| {worst.max_abs:.3g}) "
            f"under profile {profile}"
        )
    metrics["warned"] = bool(warnings)
    metrics["warnings"] = ["low-headroom"] if warnings else []

    result_margin = None
    if dtype == "fp16" and lowest:
        result_margin = -math.inf if failed else _headroom_margin(lowest[0][1].headroom)
    return Verdict(failure, warnings, metrics, result_margin)


def _plan_text(plan: StressPlan) -> str:
    if not plan.edits:
        return f"{plan.profile} (weights as built)"
    return f"{plan.profile} ({plan.summary})"


def _distinct(lowest: list[tuple[str, Headroom]]) -> list[tuple[str, Headroom]]:
    """Keep each module once (its lowest entry over profiles)."""
    seen: set[str] = set()
    distinct = []
    for profile, headroom in lowest:
        if headroom.module in seen:
            continue
        seen.add(headroom.module)
        distinct.append((profile, headroom))
    return distinct


def _profile_points(run: ProfileRun, dtype: str) -> list[list[Any]]:
    """Return [module label, headroom] for every module call in completion order.

    Headroom is rounded to 4 significant digits, 0 where non-finite, and None where no
    tensor of the call counts (a module kept in float32), so every run of a case lists
    the same modules in the same order.
    """
    counted = COUNTED_DTYPES.get(dtype, frozenset())
    points = []
    for record in run.records:
        headroom = headroom_of(record, counted)
        value = None if headroom is None else headroom.headroom
        if value is not None and math.isfinite(value):
            value = float(f"{value:.4g}")
        label = record.name or "(model)"
        points.append([f"{label}#{record.call_index}" if record.call_index else label, value])
    return points


InstrumentedRun = Callable[[Sequence[WeightEdit], str | None], Measurement]


def instrumented_forward(
    module: torch.nn.Module, forward: Callable[[], Any], edits: Sequence[WeightEdit], capture: str | None = None
) -> tuple[Measurement, Any]:
    """Run ``forward`` with ``edits`` applied to ``module`` and every module's range recorded.

    ``capture`` names a module whose first output tensor is kept (in float32, on the CPU).
    Returns the measurement and the forward's output.
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(submodule: torch.nn.Module, args: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        captured["tensor"] = tensor.detach().to("cpu", torch.float32).clone()

    with applied(module, edits):
        handle = module.get_submodule(capture).register_forward_hook(keep) if capture else None
        try:
            with recording_ranges(module) as recording:
                output = forward()
        finally:
            if handle is not None:
                handle.remove()
    return Measurement(recording.by_completion(), captured.get("tensor")), output


def kept_in_fp32(built: BuiltCase, device: str) -> frozenset[str]:
    """Return the parameters ``from_pretrained(dtype=torch.float16)`` keeps in float32."""
    model = load_model(built, torch.float16, device)
    names = frozenset(name for name, parameter in model.named_parameters() if parameter.dtype == torch.float32)
    del model
    return names


def declared_keep_in_fp32(model: torch.nn.Module) -> list[str]:
    """Return the keep-in-fp32 patterns a loaded model declares (its own and its submodels')."""
    declared = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    declared |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    return sorted(declared)


@dataclass
class _CaseState:
    plans: dict[str, StressPlan] = field(default_factory=dict)
    references: dict[tuple[str, str], list[ModuleRange]] = field(default_factory=dict)
    kept: frozenset[str] | None = None


class OverflowRunner:
    """Plans profiles and records the float32 reference once per case; runs variants under each plan."""

    def __init__(self, session: Any, profiles: Sequence[StressProfile]) -> None:
        self.session = session
        self.profiles = list(profiles)
        self._cases: dict[str, _CaseState] = {}
        self._load_paths_compared: set[str] = set()

    def claim_load_path(self, case: Case) -> bool:
        """Return True the first time it is called for ``case``: the caller compares load paths then."""
        if case.id in self._load_paths_compared:
            return False
        self._load_paths_compared.add(case.id)
        return True

    def _state(self, case: Case) -> _CaseState:
        return self._cases.setdefault(case.id, _CaseState())

    def _reference(self, case: Case) -> Any:
        return self.session.prepared(case, self.session.reference_variant(case))

    def measure_reference(
        self, case: Case, inputs: ModelInputs, edits: Sequence[WeightEdit], capture: str | None = None
    ) -> Measurement:
        reference = self._reference(case)
        measurement, _ = instrumented_forward(reference.module, lambda: reference.forward(inputs), edits, capture)
        return measurement

    def kept_in_fp32(self, case: Case) -> frozenset[str]:
        """Return (once per case) the parameters from_pretrained(dtype=float16) keeps in float32."""
        state = self._state(case)
        if state.kept is None:
            reference = self._reference(case)
            if declared_keep_in_fp32(reference.module):
                state.kept = kept_in_fp32(self.session.built(case), self.session.device)
            else:
                state.kept = frozenset()
        return state.kept

    def plans(self, case: Case, inputs: ModelInputs, key: str) -> list[StressPlan]:
        """Return the baseline and every selected profile's plan for ``case``, planning each once."""
        state = self._state(case)
        baseline = StressPlan(BASELINE)
        plans = [baseline]
        for profile in self.profiles:
            if profile.name not in state.plans:
                context = PlanningContext(
                    model=self._reference(case).module,
                    source=case.source,
                    baseline=self.reference_records(case, inputs, key, baseline),
                    measure=lambda edits, capture: self.measure_reference(case, inputs, edits, capture),
                    kept_in_fp32=lambda: self.kept_in_fp32(case),
                )
                state.plans[profile.name] = profile.plan(context)
                log.info("planned %s for %s: %s", profile.name, case.id, state.plans[profile.name].describe())
            plans.append(state.plans[profile.name])
        return plans

    def reference_records(self, case: Case, inputs: ModelInputs, key: str, plan: StressPlan) -> list[ModuleRange]:
        state = self._state(case)
        if (key, plan.profile) not in state.references:
            state.references[(key, plan.profile)] = self.measure_reference(case, inputs, plan.edits).records
        return state.references[(key, plan.profile)]

    def run(
        self,
        case: Case,
        module: torch.nn.Module,
        forward: Callable[[], Any],
        inputs: ModelInputs,
        key: str,
        dtype: str,
    ) -> list[ProfileRun]:
        """Run ``forward`` (a forward of ``module``) under the baseline and every profile."""
        runs = []
        for plan in self.plans(case, inputs, key):
            if plan.skipped:
                runs.append(ProfileRun(plan, skipped=plan.skipped))
                continue
            reference_records = self.reference_records(case, inputs, key, plan)
            try:
                measurement, output = instrumented_forward(module, forward, plan.edits)
            except EditNotApplicable as error:
                runs.append(ProfileRun(plan, skipped=str(error)))
                continue
            runs.append(_profile_run(plan, measurement.records, reference_records, output, dtype))
        return runs


def _profile_run(
    plan: StressPlan, records: list[ModuleRange], reference_records: list[ModuleRange], output: Any, dtype: str
) -> ProfileRun:
    counted = COUNTED_DTYPES.get(dtype, frozenset())
    run = ProfileRun(
        plan,
        records=records,
        reference_records=reference_records,
        nonfinite=first_nonfinite(records, reference_records),
        lowest=lowest_headroom(records, counted, LOWEST_COUNT),
    )
    if not records:
        # Hooks did not fire (a compiled runner, say), so judge the output alone, against
        # the reference's output (the record of the model itself, named "").
        tensor = primary_output(output)
        roots = [record.output for record in reference_records if not record.name and record.output is not None]
        if all(root.finite for root in roots):
            run.output_nonfinite = int((~torch.isfinite(tensor)).sum())
    return run


@dataclass
class LoadPathComparison:
    """Float16 through ``from_pretrained(dtype=torch.float16)`` against ``.half()`` of a float32 load."""

    declared: list[str]
    kept: frozenset[str]
    half_runs: list[ProfileRun]
    failure: str | None = None
    warning: str | None = None

    def metrics(self, loaded_runs: Sequence[ProfileRun]) -> dict[str, Any]:
        loaded = {run.profile: run for run in loaded_runs}
        profiles = {}
        for half in self.half_runs:
            if half.skipped or loaded.get(half.profile) is None or loaded[half.profile].skipped:
                continue
            entry = {
                "from_pretrained": "non-finite" if loaded[half.profile].failed else "finite",
                "half": "non-finite" if half.failed else "finite",
            }
            if half.nonfinite is not None:
                entry["half_first_nonfinite"] = half.nonfinite.module
            profiles[half.profile] = entry
        return {
            "declared": self.declared,
            "kept_in_fp32": sorted(self.kept),
            "profiles": profiles,
            "depends": self.warning is not None,
        }


def compare_load_paths(
    runner: OverflowRunner,
    case: Case,
    loaded: torch.nn.Module,
    loaded_runs: Sequence[ProfileRun],
    load_float32: Callable[[], torch.nn.Module],
    inputs: ModelInputs,
    key: str,
    device: str,
) -> LoadPathComparison | None:
    """Compare a float16 model loaded by from_pretrained with ``.half()`` of a float32 load, under every profile.

    Returns None when the model declares no keep-in-fp32 modules. Fails when it declares
    some but from_pretrained kept no parameter in float32; warns when a profile stays
    finite through from_pretrained but turns non-finite through ``.half()``.
    """
    declared = declared_keep_in_fp32(loaded)
    if not declared:
        return None
    kept = frozenset(name for name, parameter in loaded.named_parameters() if parameter.dtype == torch.float32)

    half = load_float32().half()
    tensors = inputs.to(device, torch.float16)

    def forward() -> Any:
        with torch.inference_mode():
            return half(**tensors)

    half_runs = runner.run(case, half, forward, inputs, key, "fp16")
    comparison = LoadPathComparison(declared, kept, half_runs)
    if not kept:
        comparison.failure = (
            f"{type(loaded).__name__} declares keep-in-fp32 modules {declared}, but "
            "from_pretrained(dtype=torch.float16) loaded every parameter in float16"
        )
        return comparison

    loaded_by_profile = {run.profile: run for run in loaded_runs}
    for run in half_runs:
        through_loader = loaded_by_profile.get(run.profile)
        if run.skipped or through_loader is None or through_loader.skipped:
            continue
        if run.failed and not through_loader.failed:
            where = run.nonfinite.describe() if run.nonfinite else "its output is non-finite"
            comparison.warning = (
                f"warning: fp16 safety depends on the load path: under profile {run.profile}, from_pretrained"
                f"(dtype=torch.float16) keeps {short_names(kept)} in fp32 and stays finite, but .half() of an "
                f"fp32 load goes non-finite ({where})"
            )
            break
    return comparison
