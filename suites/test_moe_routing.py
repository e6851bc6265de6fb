"""MoE routing: router invariants, expert agreement across backends, expert load.

A Mixture-of-Experts model is only right if every backend sends each token to the same
experts; logits can look close while the routing differs. These checks capture each MoE
layer's router logits (pre-softmax), chosen experts and weights through module hooks
(``harness.probes.routing``, which finds routers by structure) and judge the routing
itself:

- invariants, on every variant: top-k distinct experts in range, the top-k of the router's
  logits, group-limited routing inside the selected groups, weights normalized when the
  config requests it, shared experts active on every token; routing that repeats across two
  runs and does not depend on batch mates or padding;
- agreement with the fp32 eager reference: per layer the fraction of tokens with the same
  expert set, mean Jaccard, weight error, and every flip classified as a near tie, an echo
  of an earlier layer's flip, or unexplained (which fails);
- expert outputs: each expert of a variant against the same expert of the reference on the
  same hidden states, and the experts implementations against each other in fp32;
- whether ``output_router_logits`` really returns pre-softmax logits.

Capturing runs ``PreparedModel.forward`` with hooks on the plain module, so a compiled
runner traces the hooks too.
"""

from __future__ import annotations

import pytest
import torch

from harness.backends import get_backend
from harness.backends.eager import EXPERTS_IMPLEMENTATIONS
from harness.checks import check
from harness.inputs import PADDED, PLAIN, InputSpec, ModelInputs, text_config_of
from harness.probes.routing import (
    MoEDiscoveryError,
    RoutingCapture,
    capture_routing,
    experts_per_token,
    find_moe_layers,
    looks_like_probabilities,
    per_expert_outputs,
    replay_experts,
    token_position,
    tokens_layout,
)
from harness.probes.routing_invariants import check_layer, group_routing, group_routing_problems
from harness.probes.routing_stats import LayerAgreement, compare_routing, expert_load
from harness.routing_tolerances import routing_tolerance
from harness.tolerances import tolerance_for

SUITE = "moe_routing"
RUN_BY_DEFAULT = True

# 256 tokens: enough for load statistics and near ties to show, a few milliseconds per
# forward on the tiny cases.
ROUTING = InputSpec(name="routing", batch_size=4, seq_len=64)
# Flips and violations stored per result; the count of all of them is recorded too.
MAX_RECORDED_FLIPS = 50
# Tokens replayed through each expert when comparing expert outputs.
REPLAY_TOKENS = 64


def is_moe(case) -> bool:
    return case.is_moe


@pytest.fixture(scope="session")
def routing_of(harness):
    """Return a function giving a variant's routing on (case, input spec), captured once and shared by checks.

    Checks run case by case and variant by variant, so the store keeps the current case's
    reference and its latest other variant, and drops the rest.
    """
    captures: dict[tuple[str, str, str], RoutingCapture] = {}

    def get(case, variant, spec: InputSpec) -> RoutingCapture:
        key = (case.id, variant.id, spec.name)
        if key not in captures:
            reference = harness.reference_variant(case).id
            for known in list(captures):
                other_case = known[0] != case.id
                if other_case or (variant.id != reference and known[1] not in (reference, variant.id)):
                    del captures[known]
            captures[key] = capture(harness.prepared(case, variant), harness.inputs(case, spec))
        return captures[key]

    return get


@pytest.fixture(scope="session")
def reference_expert_outputs(harness, routing_of):
    """Return a function giving the reference's per-expert outputs, computed once per case and input spec.

    The function maps each experts module's name to the hidden states replayed through it and
    every expert's output on them.
    """
    computed: dict[tuple[str, str], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    def get(case, spec: InputSpec) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        key = (case.id, spec.name)
        if key not in computed:
            computed.clear()
            reference = harness.prepared(case, harness.reference_variant(case))
            routing = routing_of(case, harness.reference_variant(case), spec)
            outputs = {}
            for layer in find_moe_layers(reference.module):
                record = next(record for record in routing.layers if record.experts_name == layer.experts_name)
                hidden = record.experts_input[:REPLAY_TOKENS]
                outputs[layer.experts_name] = (hidden, per_expert_outputs(layer.experts, hidden, layer.num_experts))
            computed[key] = outputs
        return computed[key]

    return get


def capture(prepared, inputs: ModelInputs, forced: RoutingCapture | None = None) -> RoutingCapture:
    return capture_routing(prepared.module, lambda: prepared.forward(inputs), forced=forced)


def classify_flips(prepared, inputs, reference, candidate, epsilon, groups) -> list[LayerAgreement]:
    """Compare a candidate's routing with a reference's; rerun with the reference's routing forced when needed.

    The forced run only separates echoes of earlier flips from unexplained ones, so it runs
    only when some flip is beyond a near tie.
    """
    agreements = compare_routing(reference, candidate, None, inputs.valid, epsilon, groups)
    if all(flip.explained for agreement in agreements for flip in agreement.flips):
        return agreements
    forced = capture(prepared, inputs, forced=reference)
    return compare_routing(reference, candidate, forced, inputs.valid, epsilon, groups)


def family_of(variant) -> str:
    return get_backend(variant.backend).family


def routing_config(prepared):
    return text_config_of(prepared.module.config)


@check(variants="all", inputs=(ROUTING,), applies_to=is_moe)
def test_router_invariants(harness, case, variant, input_spec, prepared, check, routing_of):
    config = routing_config(prepared)
    layers = find_moe_layers(prepared.module)
    if not layers:
        raise MoEDiscoveryError(
            f"case {case.id!r} is tagged moe, but {type(prepared.module).__name__} has no MoE layer"
        )
    tolerance = routing_tolerance(family_of(variant), variant.dtype, case.id)
    check.thresholds = tolerance.as_dict()
    top_k = experts_per_token(config, layers[0])
    problems = group_routing_problems(config, layers[0].num_experts, top_k)
    if problems:
        check.fail(f"group-limited routing config rejected before running: {'; '.join(problems)}")

    inputs = harness.inputs(case, input_spec)
    routing = routing_of(case, variant, input_spec)
    layout = tokens_layout(routing.layers[0].tokens, inputs.valid) if routing.layers else None
    records = {record.router_name: record for record in routing.layers}
    violations = [f"{layer.router_name} never ran" for layer in layers if layer.router_name not in records]
    reports = [
        check_layer(layer, records[layer.router_name], config, top_k, tolerance.weight_atol, layout)
        for layer in layers
        if layer.router_name in records
    ]
    loads = [expert_load(record, inputs.valid) for record in routing.layers]

    check.record(
        is_reference=variant == harness.reference_variant(case),
        moe_layers=len(layers),
        num_experts=layers[0].num_experts,
        top_k=top_k,
        logits_source=routing.layers[0].logits_source if routing.layers else "",
        weights_rules={report.layer: report.weights_rule for report in reports},
        load=[load.as_metrics() for load in loads],
        max_load_cv=max((load.coefficient_of_variation for load in loads), default=0.0),
        dead_experts=sum(len(load.dead_experts) for load in loads),
    )
    for load in loads:
        if load.dead_experts:
            check.note(f"{load.layer} sent no token to experts {load.dead_experts}")
    violations += [violation for report in reports for violation in report.violations]
    check.record(violations=len(violations))
    if violations:
        shown = violations[:5]
        more = f"; and {len(violations) - 5} more" if len(violations) > 5 else ""
        check.fail("; ".join(shown) + more)


@check(variants="all", inputs=(ROUTING,), applies_to=is_moe)
def test_routing_repeatable(harness, case, variant, input_spec, prepared, check, routing_of):
    inputs = harness.inputs(case, input_spec)
    first = routing_of(case, variant, input_spec)
    second = capture(prepared, inputs)

    changed = []
    weights_drift = 0.0
    for one, two in zip(first.layers, second.layers, strict=True):
        differs = (one.index.sort(-1).values != two.index.sort(-1).values).any(-1)
        if differs.any():
            tokens = differs.nonzero().flatten().tolist()
            layout = tokens_layout(one.tokens, inputs.valid)
            where = ", ".join(str(token_position(token, layout)) for token in tokens[:3])
            changed.append(f"{one.router_name}: {len(tokens)} tokens changed experts, at (row, position) {where}")
        else:
            weights_drift = max(weights_drift, float((one.weights - two.weights).abs().max()))
    check.record(layers_changed=len(changed), weights_max_drift=weights_drift)
    if weights_drift > 0:
        check.note(f"routing weights moved by up to {weights_drift:.3g} between two identical runs")
    if changed:
        check.fail("two identical runs routed differently: " + "; ".join(changed))


def row_inputs(inputs: ModelInputs, row: int) -> tuple[ModelInputs, torch.Tensor]:
    """Return batch row ``row`` alone with its padding removed, and the flattened batch tokens it keeps.

    Tensors shaped (batch, positions) like the padding mask lose the padded positions;
    other tensors with a batch dimension keep only the row.
    """
    valid = inputs.valid
    batch, positions = valid.shape
    keep = valid[row].bool()
    tensors = {}
    for name, tensor in inputs.tensors.items():
        if tensor.dim() >= 2 and tuple(tensor.shape[:2]) == (batch, positions):
            tensors[name] = tensor[row : row + 1, keep]
        elif tensor.dim() >= 1 and tensor.shape[0] == batch:
            tensors[name] = tensor[row : row + 1]
        else:
            tensors[name] = tensor
    tokens = torch.arange(row * positions, (row + 1) * positions)[keep]
    return ModelInputs(tensors, valid=torch.ones(1, int(keep.sum()), dtype=torch.bool)), tokens


@check(variants="all", inputs=(PADDED,), applies_to=is_moe)
def test_routing_independent_of_batch_and_padding(harness, case, variant, input_spec, prepared, check):
    inputs = harness.inputs(case, input_spec)
    if inputs.valid is None or inputs.valid.dim() != 2:
        pytest.skip(f"{case.inputs} inputs mark no (row, position) tokens, so rows cannot run alone")
    batch = capture(prepared, inputs)
    if tokens_layout(batch.layers[0].tokens, inputs.valid) is None:
        pytest.skip(f"the MoE layers route {batch.layers[0].tokens} tokens, not one per input position")
    tolerance = routing_tolerance(family_of(variant), variant.dtype, case.id)
    groups = group_routing(routing_config(prepared))
    check.thresholds = tolerance.as_dict()

    # A padded row run alone drops both its padding and its batch mates; unpadded rows add
    # little beyond that and cost a forward each.
    padded_rows = [row for row in range(inputs.valid.shape[0]) if not bool(inputs.valid[row].all())]
    unexplained = []
    flips = 0
    for row in padded_rows or [0]:
        alone_inputs, tokens = row_inputs(inputs, row)
        in_batch = batch.select(tokens)
        alone = capture(prepared, alone_inputs)
        agreements = classify_flips(prepared, alone_inputs, in_batch, alone, tolerance.tie_epsilon, groups)
        flips += sum(len(agreement.flips) for agreement in agreements)
        padded = int((~inputs.valid[row].bool()).sum())
        for agreement in agreements:
            for flip in agreement.unexplained:
                position = int(tokens[flip.token]) % inputs.valid.shape[1]
                unexplained.append(
                    f"row {row} ({padded} padded positions) run alone: {flip.layer} position {position} picks "
                    f"{flip.experts} instead of {flip.reference_experts} (margin {flip.margin:.3g} > "
                    f"epsilon {flip.epsilon:.3g})"
                )
    check.record(rows_run_alone=len(padded_rows or [0]), flips=flips, unexplained_flips=len(unexplained))
    if unexplained:
        check.fail("routing depends on batch mates or padding: " + "; ".join(unexplained[:3]))


def _judge_agreement(agreements: list[LayerAgreement]) -> float:
    """Return the margin: 1 minus the largest flip margin as a fraction of its layer's epsilon."""
    used = [
        flip.margin / flip.epsilon if flip.epsilon > 0 else float("inf")
        for agreement in agreements
        for flip in agreement.flips
        if flip.cause != "downstream"
    ]
    return 1.0 - max(used, default=0.0)


@check(variants="non-reference", inputs=(ROUTING,), applies_to=is_moe)
def test_routing_agreement(harness, case, variant, input_spec, prepared, check, routing_of):
    reference = routing_of(case, harness.reference_variant(case), input_spec)
    inputs = harness.inputs(case, input_spec)
    candidate = routing_of(case, variant, input_spec)
    tolerance = routing_tolerance(family_of(variant), variant.dtype, case.id)
    groups = group_routing(routing_config(prepared))
    agreements = classify_flips(prepared, inputs, reference, candidate, tolerance.tie_epsilon, groups)

    flips = [flip for agreement in agreements for flip in agreement.flips]
    unexplained = [flip for flip in flips if not flip.explained]
    check.thresholds = tolerance.as_dict()
    check.margin = _judge_agreement(agreements)
    check.record(
        layers=[agreement.as_metrics() for agreement in agreements],
        identical_fraction=min((agreement.identical_fraction for agreement in agreements), default=1.0),
        mean_jaccard=min((agreement.mean_jaccard for agreement in agreements), default=1.0),
        weights_max_error=max((agreement.weights_max_error for agreement in agreements), default=0.0),
        flips_total=len(flips),
        unexplained_flips=len(unexplained),
        # Unexplained flips first, so the stored list keeps them when it is cut.
        flips=[flip.as_dict() for flip in sorted(flips, key=lambda flip: flip.explained)[:MAX_RECORDED_FLIPS]],
    )
    explained = len(flips) - len(unexplained)
    if explained:
        causes = {cause: sum(flip.cause == cause for flip in flips) for cause in ("near tie", "downstream")}
        check.note(f"{explained} explained flips: {causes['near tie']} near ties, {causes['downstream']} downstream")
    if unexplained:
        shown = "; ".join(flip.describe() for flip in unexplained[:3])
        check.fail(f"{len(unexplained)} unexplained expert flips against {harness.reference_variant(case).id}: {shown}")


def compare_experts(reference_outputs: torch.Tensor, outputs: torch.Tensor, atol: float, rtol: float) -> dict:
    """Compare per-expert outputs shaped (experts, tokens, hidden); return errors, the allowance and swaps.

    ``matches[e]`` is the reference expert whose output expert ``e`` reproduces within the
    allowance, when that is not ``e`` itself.
    """
    allowed = atol + rtol * float(reference_outputs.abs().max())
    errors = (outputs - reference_outputs).abs().flatten(1).amax(-1)
    matches = {}
    for expert in (errors > allowed).nonzero().flatten().tolist():
        against_all = (outputs[expert].unsqueeze(0) - reference_outputs).abs().flatten(1).amax(-1)
        best = int(against_all.argmin())
        if float(against_all[best]) <= allowed and best != expert:
            matches[expert] = best
    return {"errors": errors, "allowed": allowed, "matches": matches}


def describe_expert_mismatch(layer: str, comparison: dict) -> str:
    errors, allowed, matches = comparison["errors"], comparison["allowed"], comparison["matches"]
    wrong = (errors > allowed).nonzero().flatten().tolist()
    text = (
        f"{layer}: experts {wrong} differ from the reference's (max abs error {float(errors.max()):.3g}, "
        f"allowed {allowed:.3g})"
    )
    if matches:
        pairs = ", ".join(
            f"expert {expert} computes the reference's expert {other}" for expert, other in matches.items()
        )
        text += f"; {pairs}"
    return text


@check(variants="non-reference", inputs=(ROUTING,), applies_to=is_moe)
def test_expert_outputs(harness, case, variant, input_spec, prepared, check, reference_expert_outputs):
    expected_outputs = reference_expert_outputs(case, input_spec)
    tolerance = tolerance_for(family_of(variant), variant.dtype, case.id)
    atol, rtol = tolerance.atol or 0.0, tolerance.rtol or 0.0
    check.thresholds = tolerance.as_dict()

    failures, used = [], []
    for layer in find_moe_layers(prepared.module):
        hidden, expected = expected_outputs[layer.experts_name]
        actual = per_expert_outputs(layer.experts, hidden, layer.num_experts)
        comparison = compare_experts(expected, actual, atol, rtol)
        used.append(float(comparison["errors"].max()) / comparison["allowed"] if comparison["allowed"] > 0 else 0.0)
        if bool((comparison["errors"] > comparison["allowed"]).any()):
            failures.append(describe_expert_mismatch(layer.experts_name, comparison))
    check.margin = 1.0 - max(used, default=0.0)
    check.record(layers_failed=len(failures), max_tolerance_used=max(used, default=0.0))
    if failures:
        check.fail("; ".join(failures))


@check(variants="reference", inputs=(ROUTING,), applies_to=is_moe)
def test_experts_implementations(harness, case, variant, input_spec, prepared, check, routing_of):
    reference = routing_of(case, harness.reference_variant(case), input_spec)
    tolerance = tolerance_for(family_of(variant), variant.dtype, case.id)
    atol, rtol = tolerance.atol or 0.0, tolerance.rtol or 0.0
    check.thresholds = tolerance.as_dict()
    layers = find_moe_layers(prepared.module)
    module = prepared.module
    baseline = module.get_experts_implementation()

    def outputs() -> list[torch.Tensor]:
        results = []
        for layer, record in zip(layers, reference.layers, strict=True):
            results.append(
                replay_experts(layer.experts, record.experts_input, record.received_index, record.received_weights)
            )
        return results

    failures, used, compared = [], [], []
    try:
        expected = outputs()
        for implementation in EXPERTS_IMPLEMENTATIONS:
            if implementation == variant.setting("experts"):
                continue
            try:
                module.set_experts_implementation(implementation)
            except (ValueError, ImportError, NotImplementedError) as error:
                check.note(f"experts implementation {implementation} is not available: {error}")
                continue
            compared.append(implementation)
            for layer, want, got in zip(layers, expected, outputs(), strict=True):
                allowed = atol + rtol * float(want.abs().max())
                error = float((got - want).abs().max())
                used.append(error / allowed if allowed > 0 else 0.0)
                if not error <= allowed:
                    failures.append(
                        f"{implementation} differs from {variant.setting('experts')} at {layer.experts_name}: "
                        f"max abs error {error:.3g} > allowed {allowed:.3g}"
                    )
    finally:
        module.set_experts_implementation(baseline)
    if not compared:
        pytest.skip("no other experts implementation is available to compare")
    check.margin = 1.0 - max(used, default=0.0)
    check.record(implementations=compared, max_tolerance_used=max(used, default=0.0))
    if failures:
        check.fail("; ".join(failures))


@check(variants="reference", inputs=(PLAIN,), applies_to=is_moe)
def test_output_router_logits(harness, case, variant, input_spec, prepared, check):
    inputs = harness.inputs(case, input_spec)
    module = prepared.module

    def run():
        with torch.inference_mode():
            return module(**inputs.to(prepared.device, variant.torch_dtype), output_router_logits=True)

    try:
        routing = capture_routing(module, run)
    except TypeError as error:
        pytest.skip(f"{type(module).__name__} does not take output_router_logits: {error}")
    returned = getattr(routing.outputs, "router_logits", None)
    if not returned:
        pytest.skip(f"{type(module).__name__} returns no router_logits")
    if len(returned) != len(routing.layers):
        check.fail(f"output_router_logits returned {len(returned)} tensors for {len(routing.layers)} MoE layers")

    kinds = {}
    for tensor, record in zip(returned, routing.layers, strict=True):
        values = tensor.detach().float().cpu().reshape(-1, record.num_experts)
        if torch.allclose(values, record.logits, rtol=1e-5, atol=1e-6):
            kinds[record.router_name] = "pre-softmax logits"
        elif looks_like_probabilities(values) and torch.allclose(values, record.logits.softmax(-1), atol=1e-5):
            kinds[record.router_name] = "probabilities"
        else:
            kinds[record.router_name] = "neither"
    check.record(router_logits_kinds=kinds, logits_source=routing.layers[0].logits_source)

    neither = [name for name, kind in kinds.items() if kind == "neither"]
    if neither:
        check.fail(f"router_logits of {', '.join(neither)} match neither the router's logits nor their softmax")
    probabilities = [name for name, kind in kinds.items() if kind == "probabilities"]
    if probabilities:
        pytest.xfail(
            f"output_router_logits=True returns post-softmax probabilities (rows sum to 1) under the name "
            f"router_logits for {len(probabilities)} of {len(kinds)} layers ({probabilities[0]} ...); the suite "
            f"reads pre-softmax logits from the {routing.layers[0].logits_source}"
        )
