"""Consistency probes: a model checked against itself instead of against a reference.

Each probe runs a prepared model on a batch and on an edited copy of it, and compares the
outputs the edit must leave unchanged:

- causality: a token swapped at position t leaves the row's outputs before t unchanged;
- padding: a padded row's real positions match the same row run alone without padding;
- batch: a row's outputs match the row run alone and the row beside other batch mates;
- cache: a prefill plus one decode step per remaining position matches the full forward;
- determinism: running the same batch again gives the same outputs.

Outputs are judged with the parity tolerance table, or bitwise where the arithmetic must
be identical (see :func:`exact_reason`). A failing causality, padding or batch probe
reruns both sides with every module recorded and names the first module that differs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness.backends import PreparedModel, Variant
from harness.inputs import ModelInputs, text_config_of
from harness.probes.activations import Divergence, ModuleOutput, first_divergence, recording_module_outputs
from harness.probes.compare import OutputComparison, compare_outputs, has_vocabulary_logits, primary_output
from harness.probes.rows import (
    MASK,
    TokenLayout,
    accepts_position_ids,
    batch_size_of,
    replace_rows,
    special_token_ids,
    split_for_decoding,
    strip_padding,
    take_rows,
    with_mask_positions,
    with_token,
)
from harness.tolerances import Tolerance, Verdict, judge

# Experts implementations that multiply all tokens routed to an expert as one matrix. A
# later token that joins or leaves an expert changes that matmul's row count, and CPU
# GEMM rounding depends on the row count. Earlier positions then move by ~1e-7 relative
# in fp32 (measured on the tiny MoE cases, torch 2.13.0 CPU). batched_mm multiplies each
# token on its own and stays bitwise.
GROUPING_EXPERTS = frozenset({"eager", "grouped_mm"})


@dataclass(frozen=True)
class Judgement:
    """The rule a probe's outputs are judged by: a tolerance, or bitwise equality with its reason."""

    tolerance: Tolerance
    dtype: str
    exact: str | None = None

    @classmethod
    def from_table(cls, tolerance: Tolerance, dtype: str, exact: str | None) -> Judgement:
        """Judge by the table's entry without its top-1 limit; top-1 agreement is still recorded.

        A probe compares a handful of positions, where one near-tie flip moves top-1
        agreement by a quarter: a bf16 cache probe flipped 1 of 4 argmaxes with its error
        inside atol and rtol. The elementwise, cosine and KL limits judge the logits instead.
        """
        return cls(replace(tolerance, min_top1=None), dtype, exact)

    def thresholds(self) -> dict[str, Any]:
        if self.exact:
            return {"bitwise": True, "source": f"bitwise: {self.exact}"}
        return self.tolerance.as_dict()


# Judges any difference at all; used to find where outputs first moved.
BITWISE = Judgement(Tolerance(), "fp32", exact="any difference")


def exact_reason(probe: str, variant: Variant, family: str, device: str) -> str | None:
    """Return why ``probe`` must give bitwise-equal outputs for this variant, or None.

    Causality is bitwise for fp32 eager on CPU: earlier positions are computed from the
    same values by the same kernels, except in MoE variants whose experts implementation
    groups tokens (see GROUPING_EXPERTS), which are judged by tolerance. Determinism is
    bitwise for fp32 on CPU on every backend.
    """
    if device != "cpu" or variant.dtype != "fp32":
        return None
    if probe == "determinism":
        return "two runs of fp32 on CPU"
    if probe == "causality" and family == "eager" and grouping_exception(variant) is None:
        return "fp32 eager on CPU computes earlier positions from unchanged values"
    return None


def grouping_exception(variant: Variant) -> str | None:
    """Return why an MoE variant's causality is judged by tolerance rather than bitwise, or None."""
    experts = variant.setting("experts")
    if experts not in GROUPING_EXPERTS:
        return None
    return (
        f"judged by tolerance, not bitwise: the {experts} experts implementation multiplies each "
        "expert's tokens as one matrix, whose rounding depends on its row count"
    )


@dataclass
class ProbeOutcome:
    """The verdict of one probe run, with its comparison and, on failure, the problem and culprit."""

    verdict: Verdict
    comparison: OutputComparison | None = None
    bitwise: bool = False
    problem: str = ""
    culprit: Divergence | None = None
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def describe_failure(self) -> str:
        parts = [self.problem] if self.problem else []
        parts += self.verdict.failures
        if self.culprit is not None:
            parts.append(describe_culprit(self.culprit))
        return "; ".join(parts)


def describe_culprit(divergence: Divergence) -> str:
    """Name the first module that differs, with its error against its own output's scale."""
    call = f" (call {divergence.call_index})" if divergence.call_index else ""
    return (
        f"first module that differs: {divergence.module}{call} [{divergence.class_name}], max abs error "
        f"{divergence.max_abs_error:.3g} against max |x| {divergence.reference_max_abs:.3g}"
    )


class ProbedModel:
    """A prepared model as the probes run it: forwards through the backend, hooks on its module."""

    def __init__(self, prepared: PreparedModel, config: Any) -> None:
        self.prepared = prepared
        self.module = prepared.module
        self.config = config
        self.special_ids = special_token_ids(config)
        vocab_size = getattr(text_config_of(config), "vocab_size", None)
        # None for models without token inputs (vision encoders).
        self.vocab_size = int(vocab_size) if vocab_size is not None else None
        # Whether the judged output is logits over a vocabulary, learned from the first forward.
        self.vocabulary = False

    @property
    def suppressed_ids(self) -> list[int]:
        """Return the special token ids inside the vocabulary, which generation probes never generate."""
        if self.vocab_size is None:
            return []
        return sorted(token for token in self.special_ids if 0 <= token < self.vocab_size)

    def outputs(self, tensors: dict[str, Any]) -> Any:
        outputs = self.prepared.forward(ModelInputs(tensors))
        self.vocabulary = has_vocabulary_logits(outputs)
        return outputs

    def output(self, tensors: dict[str, Any]) -> torch.Tensor:
        """Return the output the probes judge (logits, else the last hidden state), on the CPU."""
        return primary_output(self.outputs(tensors)).detach().cpu()

    def accepts_position_ids(self, layout: TokenLayout) -> bool:
        return accepts_position_ids(self.module, layout)


def compare_and_judge(
    candidate: torch.Tensor,
    reference: torch.Tensor,
    judgement: Judgement,
    *,
    valid: torch.Tensor | None = None,
    vocabulary: bool = False,
) -> ProbeOutcome:
    """Compare two outputs on the valid positions and judge them by tolerance or bitwise."""
    comparison = compare_outputs(candidate, reference, valid=valid, vocabulary=vocabulary)
    bitwise = _bitwise_equal(candidate, reference, valid)
    if judgement.exact:
        failures = [] if bitwise else [f"not bitwise equal, max abs error {comparison.max_abs_error:.3g}"]
        verdict = Verdict(passed=bitwise, margin=1.0 if bitwise else -math.inf, limiting="bitwise", failures=failures)
    else:
        verdict = judge(comparison, judgement.tolerance, judgement.dtype)
    return ProbeOutcome(verdict=verdict, comparison=comparison, bitwise=bitwise)


def _bitwise_equal(candidate: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor | None) -> bool:
    if valid is not None and tuple(candidate.shape[:2]) == tuple(valid.shape):
        return torch.equal(candidate[valid], reference[valid])
    return torch.equal(candidate, reference)


def real_positions(tensors: dict[str, Any], layout: TokenLayout) -> torch.Tensor:
    """Return a (batch, stream length) mask of the output positions that belong to real tokens."""
    stream = tensors[layout.stream]
    if layout.padding_moves_outputs:
        return tensors[MASK] != 0
    return torch.ones(stream.shape[:2], dtype=torch.bool)


# Causality


def probe_causality(
    model: ProbedModel,
    tensors: dict[str, Any],
    layout: TokenLayout,
    judgement: Judgement,
    *,
    row: int,
    position: int,
    token: int,
) -> ProbeOutcome:
    """Swap the token at (row, position) and require unchanged outputs at the row's earlier positions."""
    perturbed = with_token(tensors, layout, row, position, token)
    reference = model.output(tensors)
    candidate = model.output(perturbed)

    valid = torch.zeros(reference.shape[:2], dtype=torch.bool)
    valid[row, :position] = real_positions(tensors, layout)[row, :position]
    if not valid.any():
        raise ValueError(f"row {row} has no real token before position {position}; nothing to compare")
    outcome = compare_and_judge(candidate, reference, judgement, valid=valid, vocabulary=model.vocabulary)
    moved = not torch.equal(candidate[row, position], reference[row, position])
    outcome.metrics["edit_moved_own_position"] = moved
    if not moved:
        outcome.notes.append(f"the swapped token at position {position} left its own output unchanged")
    if outcome.passed:
        return outcome

    earliest = first_changed_position(candidate[row], reference[row], valid[row], judgement)
    if earliest is None:
        # The cosine or KL limit failed with no single position beyond the elementwise limit.
        earliest = first_changed_position(candidate[row], reference[row], valid[row], BITWISE)
    outcome.problem = (
        f"swapping the token at position {position} of row {row} changed the output at position {earliest}, before it"
    )
    outcome.metrics["leaked_into_position"] = earliest
    outcome.metrics["perturbed_position"] = position

    def select(tensor: torch.Tensor) -> torch.Tensor | None:
        view = positions_view(tensor, *valid.shape)
        return None if view is None else view[row][valid[row]]

    outcome.culprit = locate_first_difference(
        model, lambda: model.outputs(tensors), lambda: model.outputs(perturbed), select, select, judgement
    )
    return outcome


def first_changed_position(
    candidate: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, judgement: Judgement
) -> int | None:
    """Return the first valid position whose output differs bitwise (exact) or beyond tolerance."""
    scale = float(reference[valid].abs().max()) if valid.any() else 0.0
    allowed = 0.0 if judgement.exact else (judgement.tolerance.atol or 0.0) + (judgement.tolerance.rtol or 0.0) * scale
    for position in torch.nonzero(valid).flatten().tolist():
        error = (candidate[position].double() - reference[position].double()).abs().max()
        if not bool(error <= allowed):
            return position
    return None


def positions_view(tensor: torch.Tensor, batch: int, length: int) -> torch.Tensor | None:
    """View a module output as (batch, length, ...), or return None when it is not laid out by position.

    MoE blocks flatten (batch, position) into one token axis, which this undoes.
    """
    if tensor.dim() >= 2 and tuple(tensor.shape[:2]) == (batch, length):
        return tensor
    if tensor.dim() >= 1 and tensor.shape[0] == batch * length:
        return tensor.reshape(batch, length, *tensor.shape[1:])
    return None


def locate_first_difference(
    model: ProbedModel,
    run_reference: Callable[[], Any],
    run_candidate: Callable[[], Any],
    select_reference: Callable[[torch.Tensor], torch.Tensor | None],
    select_candidate: Callable[[torch.Tensor], torch.Tensor | None],
    judgement: Judgement,
) -> Divergence | None:
    """Rerun both sides with every module recorded; return the first module whose selected outputs differ.

    Only modules whose outputs both selections can place by position are compared, so an
    expert's output over a varying set of tokens is never mistaken for a leak.
    """
    with recording_module_outputs(model.module) as reference_records:
        run_reference()
    with recording_module_outputs(model.module) as candidate_records:
        run_candidate()

    by_key = {record.key: record for record in reference_records}
    kept_reference, kept_candidate = [], []
    for record in candidate_records:
        match = by_key.get(record.key)
        if match is None:
            continue
        candidate = select_candidate(record.tensor)
        reference = select_reference(match.tensor)
        if candidate is None or reference is None or candidate.shape != reference.shape:
            continue
        kept_reference.append(ModuleOutput(match.name, match.class_name, match.call_index, reference))
        kept_candidate.append(ModuleOutput(record.name, record.class_name, record.call_index, candidate))

    atol = 0.0 if judgement.exact else judgement.tolerance.atol or 0.0
    rtol = 0.0 if judgement.exact else judgement.tolerance.rtol or 0.0
    return first_divergence(kept_reference, kept_candidate, atol=atol, rtol=rtol)


# Padding


def probe_padding(
    model: ProbedModel, tensors: dict[str, Any], layout: TokenLayout, judgement: Judgement
) -> ProbeOutcome:
    """Compare row 0 of a batch, which is padded, with the same row alone and unpadded.

    Where the model takes position ids, both runs get them derived from the attention
    mask, as ``generate`` passes them: a left-padded row's first real token is at position
    0 in both. The model's own default would number the padding too, shifting the row's
    positions, which models with absolute position embeddings (GPT-2) cannot absorb.
    """
    positions = model.accepts_position_ids(layout)
    batch = with_mask_positions(tensors, layout, positions)
    alone, kept = strip_padding(take_rows(tensors, [0]), layout)
    alone = with_mask_positions(alone, layout, positions)

    batch_output = model.output(batch)
    reference = model.output(alone)
    candidate = batch_output[0:1, kept] if layout.padding_moves_outputs else batch_output[0:1]
    outcome = compare_and_judge(candidate, reference, judgement, vocabulary=model.vocabulary)
    outcome.metrics["position_ids"] = "from attention mask" if positions else "model default"
    if outcome.passed:
        return outcome

    outcome.problem = "the padded row's outputs differ from the same row run alone"
    length = batch[layout.stream].shape[1]
    batch_size = batch_size_of(batch)
    alone_length = alone[layout.stream].shape[1]

    def select_batch(tensor: torch.Tensor) -> torch.Tensor | None:
        view = positions_view(tensor, batch_size, length)
        if view is None:
            return None
        return view[0, kept] if layout.padding_moves_outputs else view[0]

    def select_alone(tensor: torch.Tensor) -> torch.Tensor | None:
        view = positions_view(tensor, 1, alone_length)
        return None if view is None else view[0]

    outcome.culprit = locate_first_difference(
        model, lambda: model.outputs(alone), lambda: model.outputs(batch), select_alone, select_batch, judgement
    )
    return outcome


# Batch invariance


def probe_batch(
    model: ProbedModel,
    tensors: dict[str, Any],
    donor: dict[str, Any],
    layout: TokenLayout | None,
    judgement: Judgement,
    *,
    row: int,
) -> ProbeOutcome:
    """Compare ``row`` of a batch with the row run alone, and with its batch mates taken from ``donor``."""
    batch_size = batch_size_of(tensors)
    mates = [index for index in range(batch_size) if index != row]
    alone = take_rows(tensors, [row])
    swapped = replace_rows(tensors, donor, mates)

    reference = model.output(tensors)[row : row + 1]
    vocabulary = model.vocabulary
    valid = real_positions(tensors, layout)[row : row + 1] if layout is not None else None
    runs = {
        "alone": (alone, model.output(alone), 0),
        "with other batch mates": (swapped, model.output(swapped)[row : row + 1], row),
    }
    outcomes = {
        name: compare_and_judge(output, reference, judgement, valid=valid, vocabulary=vocabulary)
        for name, (_, output, _) in runs.items()
    }
    worst_name = min(outcomes, key=lambda name: outcomes[name].verdict.margin)
    outcome = outcomes[worst_name]
    outcome.bitwise = all(item.bitwise for item in outcomes.values())
    outcome.metrics["compared"] = worst_name
    if outcome.passed:
        return outcome

    outcome.problem = f"row {row} of {batch_size} changed when run {worst_name}"
    candidate_inputs, _, candidate_row = runs[worst_name]
    candidate_batch = batch_size_of(candidate_inputs)
    length = tensors[layout.stream].shape[1] if layout is not None else None

    def selector(size: int, index: int) -> Callable[[torch.Tensor], torch.Tensor | None]:
        def select(tensor: torch.Tensor) -> torch.Tensor | None:
            if length is not None:
                view = positions_view(tensor, size, length)
                return None if view is None else view[index]
            return tensor[index] if tensor.dim() >= 1 and tensor.shape[0] == size else None

        return select

    outcome.culprit = locate_first_difference(
        model,
        lambda: model.outputs(tensors),
        lambda: model.outputs(candidate_inputs),
        selector(batch_size, row),
        selector(candidate_batch, candidate_row),
        judgement,
    )
    return outcome


# Cache consistency


def probe_cache(
    model: ProbedModel, tensors: dict[str, Any], layout: TokenLayout, judgement: Judgement, *, decode_steps: int
) -> ProbeOutcome:
    """Prefill all but the last ``decode_steps`` positions, decode those one at a time, compare with one forward."""
    full_inputs = with_mask_positions(tensors, layout, model.accepts_position_ids(layout))
    length = full_inputs[layout.stream].shape[1]
    prefill = length - decode_steps
    reference = model.output(full_inputs)[:, prefill:]

    prefill_inputs, steps = split_for_decoding(full_inputs, layout, prefill)
    name = cache_argument(model.module)
    outputs = model.outputs({**prefill_inputs, "use_cache": True})
    step_outputs = []
    for step in steps:
        outputs = model.outputs({**step, name: getattr(outputs, name), "use_cache": True})
        step_outputs.append(primary_output(outputs).detach().cpu())
    candidate = torch.cat(step_outputs, dim=1)

    valid = real_positions(tensors, layout)[:, prefill:]
    outcome = compare_and_judge(candidate, reference, judgement, valid=valid, vocabulary=model.vocabulary)
    outcome.metrics["prefill_length"] = prefill
    if not outcome.passed:
        earliest = first_changed_step(candidate, reference, valid, judgement)
        outcome.problem = (
            f"decoding from a cache after a {prefill}-token prefill differs from the full forward "
            f"at position {prefill + earliest} (decode step {earliest + 1} of {decode_steps})"
        )
    return outcome


def cache_argument(module: torch.nn.Module) -> str:
    """Return the name under which the model's forward takes and returns its KV cache.

    Transformers 5.25 renamed ``past_key_values`` to ``cache``; the old name warns.
    """
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def first_changed_step(
    candidate: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, judgement: Judgement
) -> int:
    """Return the first decode step whose output differs in any row."""
    for step in range(candidate.shape[1]):
        for row in range(candidate.shape[0]):
            window = slice(step, step + 1)
            changed = first_changed_position(
                candidate[row, window], reference[row, window], valid[row, window], judgement
            )
            if changed is not None:
                return step
    return 0


# Determinism


def probe_determinism(
    model: ProbedModel, tensors: dict[str, Any], layout: TokenLayout | None, judgement: Judgement, *, runs: int
) -> ProbeOutcome:
    """Run the same batch ``runs`` times; judge the run farthest from the first, on real positions."""
    first = model.output(tensors)
    valid = real_positions(tensors, layout) if layout is not None else None
    outcomes = [
        compare_and_judge(model.output(tensors), first, judgement, valid=valid, vocabulary=model.vocabulary)
        for _ in range(runs - 1)
    ]
    outcome = min(outcomes, key=lambda item: (item.bitwise, item.verdict.margin))
    outcome.bitwise = all(item.bitwise for item in outcomes)
    outcome.metrics["runs"] = runs
    if not outcome.passed:
        outcome.problem = f"{runs} runs of the same batch differ"
    elif not outcome.bitwise:
        error = max(item.comparison.max_abs_error for item in outcomes if item.comparison is not None)
        outcome.notes.append(f"nondeterministic within tolerance: {runs} runs differ by up to {error:.3g}")
    return outcome
