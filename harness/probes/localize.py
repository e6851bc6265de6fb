"""Name where a failing variant first diverges from the reference, for each kind of variant.

- A compiled variant runs as a graph, and forward hooks do not fire inside a compiled graph.
  Its module is run again eagerly in the same dtype. If that run is within tolerance, the
  divergence is the compiled graph's own and no module can be named. Otherwise the eager
  run is localized with hooks, and the message states that compiling is not the cause.
- A variant judged by cosine, top-1 and KL only (quantized variants) differs from the
  reference elementwise in every quantized layer, so it is localized by the first module
  whose output's cosine similarity with the reference's output falls below ``min_cosine``.
- Any other variant: the first module whose output leaves ``atol + rtol * max |r|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness.backends import PreparedModel
from harness.inputs import ModelInputs
from harness.probes.activations import ModuleOutput, _valid_view, locate_divergence, recording_module_outputs
from harness.probes.compare import compare_outputs, primary_output
from harness.tolerances import Tolerance, judge


@dataclass
class Localization:
    """The place a failure was found, as a message fragment, with the metrics to record."""

    text: str
    metrics: dict[str, Any] = field(default_factory=dict)


def localize_failure(
    reference: PreparedModel,
    candidate: PreparedModel,
    inputs: ModelInputs,
    reference_output: torch.Tensor,
    tolerance: Tolerance,
) -> Localization:
    """Localize a variant whose output failed ``tolerance`` against the reference."""
    if candidate.runner is not None:
        return _localize_compiled(reference, candidate, inputs, reference_output, tolerance)
    if tolerance.atol is None and tolerance.rtol is None and tolerance.min_cosine is not None:
        return _localize_by_cosine(reference, candidate, inputs, tolerance.min_cosine)
    return _localize_elementwise(reference, candidate, inputs, tolerance)


def _localize_elementwise(
    reference: PreparedModel, candidate: PreparedModel, inputs: ModelInputs, tolerance: Tolerance
) -> Localization:
    divergence = locate_divergence(
        reference.module,
        candidate.module,
        lambda: reference.forward(inputs),
        lambda: candidate.forward(inputs),
        atol=tolerance.atol or 0.0,
        rtol=tolerance.rtol or 0.0,
        valid=inputs.valid,
    )
    if divergence is None:
        return Localization("no single module left tolerance")
    return Localization(divergence.describe(), {"first_divergent_module": divergence.module})


def _localize_compiled(
    reference: PreparedModel,
    candidate: PreparedModel,
    inputs: ModelInputs,
    reference_output: torch.Tensor,
    tolerance: Tolerance,
) -> Localization:
    eager = replace(candidate, runner=None)
    output = primary_output(eager.forward(inputs))
    comparison = compare_outputs(output, reference_output, valid=inputs.valid, vocabulary=output.dim() == 3)
    # Without the fp64 run, the RMSE criterion is not judged; the elementwise ones decide.
    verdict = judge(comparison, replace(tolerance, max_rmse_ratio=None), candidate.variant.dtype)
    dtype = candidate.variant.dtype
    if verdict.passed:
        return Localization(
            f"the compiled graph diverges: the same module run eagerly in {dtype} is within tolerance "
            f"(max abs error {comparison.max_abs_error:.3g}, margin {verdict.margin:.3g}); forward hooks "
            "cannot see inside a compiled graph, so no module is named",
            {"first_divergent_module": "<compiled graph>", "eager_rerun_max_abs_error": comparison.max_abs_error},
        )
    found = _localize_elementwise(reference, eager, inputs, tolerance)
    found.text = f"the same module run eagerly in {dtype} fails too, so compiling is not the cause; {found.text}"
    found.metrics["eager_rerun_max_abs_error"] = comparison.max_abs_error
    return found


def _localize_by_cosine(
    reference: PreparedModel, candidate: PreparedModel, inputs: ModelInputs, min_cosine: float
) -> Localization:
    with recording_module_outputs(reference.module) as reference_records:
        reference.forward(inputs)
    with recording_module_outputs(candidate.module) as candidate_records:
        candidate.forward(inputs)
    found = first_below_cosine(reference_records, candidate_records, min_cosine, valid=inputs.valid)
    if found is None:
        return Localization(f"no single module's output fell below cosine {min_cosine}")
    record, cosine = found
    call = f" (call {record.call_index})" if record.call_index else ""
    return Localization(
        f"first module below cosine {min_cosine}: {record.name}{call} [{record.class_name}], cosine {cosine:.4g}",
        {"first_divergent_module": record.name},
    )


def first_below_cosine(
    reference: list[ModuleOutput],
    candidate: list[ModuleOutput],
    min_cosine: float,
    valid: torch.Tensor | None = None,
) -> tuple[ModuleOutput, float] | None:
    """Return the first candidate record whose cosine similarity with the reference's is below ``min_cosine``.

    Records match by (module name, call index) and shape, and only real-token positions
    count. A record with values that are non-finite where the reference's are finite
    counts as cosine -1.
    """
    by_key = {record.key: record for record in reference}
    for record in candidate:
        match = by_key.get(record.key)
        if match is None or match.tensor.shape != record.tensor.shape or record.tensor.numel() == 0:
            continue
        x = _valid_view(record.tensor, valid).double().flatten()
        r = _valid_view(match.tensor, valid).double().flatten()
        finite = torch.isfinite(r)
        x, r = x[finite], r[finite]
        if not bool(torch.isfinite(x).all()):
            return record, -1.0
        if not r.any() and not x.any():
            continue
        cosine = float(torch.nn.functional.cosine_similarity(x, r, dim=0))
        if not math.isfinite(cosine) or cosine < min_cosine:
            return record, cosine if math.isfinite(cosine) else -1.0
    return None
