"""State shared by the checks of one run: selected cases, built models, prepared variants.

A run builds each case once and prepares each (case, variant) once. Prepared models are
kept in a small least-recently-used cache, and the plugin orders checks by case and
variant, so a run holds at most a couple of models at a time; reference outputs are kept
as CPU tensors per (case, input).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.backends import (
    Backend,
    PreparedModel,
    UnknownBackendError,
    Variant,
    VariantSkipped,
    get_backend,
    parse_selector,
    select_variants,
)
from harness.backends.eager import EagerBackend, float64_variant, reference_variant
from harness.cases import BuiltCase, Case, build_case, checkpoint_case, load_case_file, select_cases
from harness.coverage_categories import NotCovered
from harness.environment import collect_environment, resolve_device
from harness.inputs import InputSpec, ModelInputs, build_inputs
from harness.memory import release_freed_memory
from harness.probes.compare import has_vocabulary_logits, primary_output

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What a run covers; the command line and ``harness run`` fill it."""

    cases: str | None = None
    backends: str | None = None
    device: str = "auto"
    checkpoints: list[str] = field(default_factory=list)
    case_files: list[str] = field(default_factory=list)
    references_dir: Path = Path("reference_outputs")
    # Prepared variants kept besides the live reference; checks are ordered by variant, so one suffices.
    prepared_cache_size: int = 1


@dataclass
class ReferenceRun:
    """The live reference's output on one input, and the fp64 run that sets its noise floor."""

    output: torch.Tensor
    float64_output: torch.Tensor | None
    vocabulary: bool
    notes: list[str] = field(default_factory=list)


class HarnessSession:
    """Builds, prepares and caches what checks need; one per run."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.device = resolve_device(options.device)
        extra = [case for path in options.case_files for case in load_case_file(path)]
        extra += [checkpoint_case(path) for path in options.checkpoints]
        self.extra_cases = extra
        self.cases = select_cases(options.cases, self.device, extra)
        if options.checkpoints and not options.cases:
            # A run given a checkpoint is about that checkpoint.
            self.cases = [case for case in self.cases if case in extra]
        self._check_backend_selector()
        self.environment = collect_environment(self.device)
        self._built: dict[str, BuiltCase | BaseException] = {}
        self._prepared: OrderedDict[tuple[str, str], PreparedModel] = OrderedDict()
        self._pinned: dict[tuple[str, str], PreparedModel] = {}
        self._float64: dict[str, PreparedModel | None] = {}
        self._references: dict[tuple[str, str], ReferenceRun] = {}
        self._inputs: dict[tuple[str, str], ModelInputs] = {}

    # Selection

    def _check_backend_selector(self) -> None:
        """Reject a selector token that names no variant of any selected case."""
        for token in parse_selector(self.options.backends):
            if self.cases and not any(select_variants(token, case, self.device) for case in self.cases):
                backend = get_backend(token.split(":")[0])
                example = backend.variants(self.cases[0], self.device)
                hint = f"; {backend.name} variants look like {example[0].id}" if example else ""
                raise UnknownBackendError(f"backend selector {token!r} matches no variant of the selected cases{hint}")

    def variants(self, case: Case) -> list[tuple[Backend, Variant]]:
        return select_variants(self.options.backends, case, self.device)

    def reference_variant(self, case: Case) -> Variant:
        return reference_variant(case)

    # Building and preparing

    def built(self, case: Case) -> BuiltCase:
        """Return the built case; a build that failed raises the same error for every check."""
        cached = self._built.get(case.id)
        if cached is None:
            try:
                cached = build_case(case)
            except Exception as error:  # noqa: BLE001 - every check of the case reports this error
                cached = error
            self._built[case.id] = cached
        if isinstance(cached, NotCovered):
            # An automatic case this harness cannot run: a coverage finding, not an error.
            raise VariantSkipped(str(cached)) from cached
        if isinstance(cached, BaseException):
            raise RuntimeError(f"building case {case.id!r} failed: {type(cached).__name__}: {cached}") from cached
        return cached

    def prepared(self, case: Case, variant: Variant) -> PreparedModel:
        """Return the prepared model for (case, variant), preparing it on first use.

        The live reference stays loaded until the case is released, since every other
        variant is compared with it; other variants share a small least-recently-used cache.
        """
        key = (case.id, variant.id)
        if key in self._pinned:
            return self._pinned[key]
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]

        backend = get_backend(variant.backend)
        reason = backend.skip_reason(case, variant, self.device)
        if reason:
            raise VariantSkipped(reason)
        built = self.built(case)
        is_reference = variant == reference_variant(case)
        if not is_reference:
            # Checks run variant by variant, so the fp64 twin (twice the reference's size) has
            # usually produced every input's noise floor by now. A later input reloads it.
            self._float64.clear()
            self._evict(keep=self.options.prepared_cache_size - 1)
        prepared = backend.prepare(built, variant, self.device)
        log.info("prepared %s %s in %.2f s", case.id, variant.id, prepared.prepare_seconds)
        if is_reference:
            self._pinned[key] = prepared
        else:
            self._prepared[key] = prepared
        return prepared

    def _evict(self, keep: int) -> None:
        while len(self._prepared) > max(keep, 0):
            self._prepared.popitem(last=False)
        release_freed_memory()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Drop every prepared model, the reference and the fp64 twin included (at the end of a case)."""
        self._pinned.clear()
        self._float64.clear()
        self._evict(keep=0)

    # Inputs and references

    def inputs(self, case: Case, spec: InputSpec) -> ModelInputs:
        key = (case.id, spec.name)
        if key not in self._inputs:
            built = self.built(case)
            self._inputs[key] = build_inputs(case.inputs, built.config, spec, built.tokenizer)
        return self._inputs[key]

    def reference(self, case: Case, spec: InputSpec) -> ReferenceRun:
        """Return the live fp32 reference's output on ``spec``, and its fp64 twin."""
        key = (case.id, spec.name)
        if key in self._references:
            return self._references[key]

        inputs = self.inputs(case, spec)
        outputs = self.prepared(case, reference_variant(case)).forward(inputs)
        output = primary_output(outputs).detach().float().cpu()
        float64_output, notes = self._float64_output(case, inputs, output)
        run = ReferenceRun(output, float64_output, has_vocabulary_logits(outputs), notes)
        self._references[key] = run
        return run

    def _float64_output(
        self, case: Case, inputs: ModelInputs, reference: torch.Tensor
    ) -> tuple[torch.Tensor | None, list[str]]:
        """Run the case in fp64 for the noise floor; fall back to sdpa attention if eager gives NaN.

        Eager attention in fp64 fills a fully padded query row with NaN for some models
        (seen with Llama on a left-padded row), and the NaN spreads to that row's real
        tokens; fp32 does not show it, so the floor comes from sdpa then, and a note says so.
        """
        notes: list[str] = []
        variant = float64_variant(case)
        output = self._float64_run(case, variant, inputs)
        if output is not None and not _finite_where(output, reference, inputs.valid):
            sdpa = Variant(
                variant.backend, variant.dtype, tuple((k, "sdpa" if k == "attn" else v) for k, v in variant.settings)
            )
            notes.append(f"{variant.id} gave non-finite values where fp32 is finite; noise floor from {sdpa.id}")
            output = self._float64_run(case, sdpa, inputs)
            if output is not None and not _finite_where(output, reference, inputs.valid):
                notes.append(f"{sdpa.id} is non-finite too; no noise floor")
                output = None
        return output, notes

    def _float64_run(self, case: Case, variant: Variant, inputs: ModelInputs) -> torch.Tensor | None:
        """Run ``inputs`` through the fp64 twin, kept loaded until the case is released.

        One fp64 model is held at a time (twice the size of the fp32 reference); asking for
        another variant replaces it, and preparing another variant of the case drops it.
        """
        key = f"{case.id}/{variant.id}"
        if key not in self._float64:
            self._float64.clear()
            release_freed_memory()
            try:
                self._float64[key] = EagerBackend().prepare(self.built(case), variant, self.device)
            except VariantSkipped as skipped:
                log.info("no fp64 run for %s: %s", case.id, skipped)
                self._float64[key] = None
        prepared = self._float64[key]
        if prepared is None:
            return None
        return primary_output(prepared.forward(inputs)).detach().double().cpu()


def _finite_where(output: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor | None) -> bool:
    from harness.probes.compare import select_valid

    return bool(
        torch.isfinite(select_valid(output, valid)).all() or not torch.isfinite(select_valid(reference, valid)).all()
    )


def describe_options(options: RunOptions) -> dict[str, Any]:
    return {
        "cases": options.cases or "default",
        "backends": options.backends or "eager",
        "device": options.device,
        "checkpoints": options.checkpoints,
        "case_files": options.case_files,
    }
