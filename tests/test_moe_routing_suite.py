"""The moe_routing suite end to end: clean variants pass, planted routing faults are caught and named."""

from __future__ import annotations

import pytest

from harness.backends import register_backend, unregister_backend
from tests.planted_moe import PerturbedRouterBackend, ShortRouterBackend, SwappedExpertsBackend

SUITE_FILES = ("test_moe_routing.py",)
CHECK = "suites/test_moe_routing.py::{function}[{case}/{backend}/{input}]"


def check_id(function: str, case: str, backend: str, input_name: str = "routing") -> str:
    return CHECK.format(function=function, case=case, backend=backend, input=input_name)


@pytest.fixture
def planted(request):
    backend = request.param()
    register_backend(backend)
    yield backend
    unregister_backend(backend.name)


def test_routing_suite_passes_for_eager_variants(run_suites):
    run = run_suites("--cases", "qwen3-moe-tiny", "--backends", "eager:fp32,eager:bf16:eager", suites=SUITE_FILES)
    results = run.results

    assert run.exit_code == pytest.ExitCode.OK
    assert set(results["status"]) == {"pass"}
    assert set(results["suite"]) == {"moe_routing"}
    functions = set(results["check"].str.extract(r"::(\w+)\[")[0])
    assert functions == {
        "test_router_invariants",
        "test_routing_repeatable",
        "test_routing_independent_of_batch_and_padding",
        "test_routing_agreement",
        "test_expert_outputs",
        "test_experts_implementations",
        "test_output_router_logits",
    }
    html = (run.run_dir / "index.html").read_text(encoding="utf-8")
    assert 'id="moe_routing"' in html
    assert "Unexplained flips (0)" in html


def test_routing_suite_skips_dense_cases(run_suites):
    run = run_suites("--cases", "llama-tiny,qwen3-moe-tiny", "--backends", "eager:fp32:eager", suites=SUITE_FILES)

    assert set(run.results["case"]) == {"qwen3-moe-tiny"}


@pytest.mark.parametrize("planted", [SwappedExpertsBackend], indirect=True)
def test_swapped_experts_are_caught_and_named(run_suites, planted):
    backend = "swapped-experts:fp32:eager:eager"
    run = run_suites("--cases", "qwen3-moe-tiny", "--backends", f"eager:fp32:eager:eager,{backend}", suites=SUITE_FILES)

    outputs = run.result(check=check_id("test_expert_outputs", "qwen3-moe-tiny", backend))
    assert outputs["status"] == "fail"
    assert "model.layers.0.mlp.experts: experts [1, 5] differ from the reference's" in outputs["message"]
    assert "expert 1 computes the reference's expert 5" in outputs["message"]
    assert "expert 5 computes the reference's expert 1" in outputs["message"]
    assert "model.layers.1.mlp.experts" not in outputs["message"]

    agreement = run.result(check=check_id("test_routing_agreement", "qwen3-moe-tiny", backend))
    assert agreement["status"] == "fail"
    assert "unexplained expert flips" in agreement["message"]
    assert agreement["metrics"]["unexplained_flips"] > 0


@pytest.mark.parametrize("planted", [ShortRouterBackend], indirect=True)
def test_router_returning_one_expert_too_few_fails_invariants(run_suites, planted):
    backend = "short-router:fp32:eager:eager"
    run = run_suites(
        "--cases", "qwen3-moe-tiny", "--backends", backend, "-k", "test_router_invariants", suites=SUITE_FILES
    )

    result = run.result(check=check_id("test_router_invariants", "qwen3-moe-tiny", backend))
    assert result["status"] == "fail"
    assert "model.layers.0.mlp.gate: routes each token to 1 experts; the config asks for 2" in result["message"]
    assert "model.layers.1.mlp.gate: routes each token to 1 experts" in result["message"]


@pytest.mark.parametrize("planted", [PerturbedRouterBackend], indirect=True)
def test_perturbed_router_flip_is_unexplained(run_suites, planted):
    backend = "perturbed-router:fp32:eager:eager"
    run = run_suites(
        "--cases",
        "qwen3-moe-tiny",
        "--backends",
        f"eager:fp32:eager:eager,{backend}",
        "-k",
        "test_routing_agreement",
        suites=SUITE_FILES,
    )

    result = run.result(check=check_id("test_routing_agreement", "qwen3-moe-tiny", backend))
    perturbation = next(p for p in planted.perturbations if p.tokens == 4 * 64)
    row, position = divmod(perturbation.token, 64)
    flips = [flip for flip in result["metrics"]["flips"] if flip["layer"] == "model.layers.0.mlp.gate"]
    assert result["status"] == "fail"
    assert len(flips) == 1
    assert flips[0]["cause"] == "unexplained"
    assert (flips[0]["row"], flips[0]["position"]) == (row, position)
    assert flips[0]["margin"] == pytest.approx(perturbation.margin, rel=1e-4)
    assert flips[0]["margin"] > 100 * flips[0]["epsilon"]
    assert perturbation.picked in flips[0]["experts"]
    assert perturbation.dropped in flips[0]["reference_experts"]
    assert f"model.layers.0.mlp.gate row {row} position {position}" in result["message"]

    html = (run.run_dir / "index.html").read_text(encoding="utf-8")
    assert "Unexplained flips (" in html
    assert "Unexplained flips (0)" not in html


def test_gemma4_router_logits_output_is_reported_as_probabilities(run_suites):
    run = run_suites(
        "--cases",
        "gemma4-moe-tiny",
        "--backends",
        "eager:fp32:eager:eager",
        "-k",
        "test_output_router_logits",
        suites=SUITE_FILES,
    )

    result = run.result(
        check=check_id("test_output_router_logits", "gemma4-moe-tiny", "eager:fp32:eager:eager", "plain")
    )
    assert result["status"] == "xfail"
    assert "returns post-softmax probabilities" in result["message"]
    assert "router projection output" in result["message"]
    assert set(result["metrics"]["router_logits_kinds"].values()) == {"probabilities"}


def _deepseek_case_file(tmp_path, **overrides) -> str:
    """Write a case file with deepseek-v2-tiny's config plus ``overrides``; return its path."""
    from harness.cases import get_case

    config = {**get_case("deepseek-v2-tiny").config_overrides, **overrides}
    lines = ["[[case]]", 'id = "deepseek-v2-variant"', 'model_type = "deepseek_v2"', 'tags = ["decoder", "moe"]']
    lines.append("[case.config]")
    for key, value in config.items():
        lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false"))
    path = tmp_path / "cases.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_group_limited_config_is_rejected_up_front(run_suites, tmp_path):
    case_file = _deepseek_case_file(tmp_path, n_group=3)
    run = run_suites(
        "--case-file",
        case_file,
        "--cases",
        "deepseek-v2-variant",
        "--backends",
        "eager:fp32:eager:eager",
        "-k",
        "test_router_invariants",
        suites=SUITE_FILES,
    )

    result = run.result(check=check_id("test_router_invariants", "deepseek-v2-variant", "eager:fp32:eager:eager"))
    assert result["status"] == "fail"
    assert result["message"].startswith("group-limited routing config rejected before running")
    assert "n_group 3 does not divide the 8 routed experts" in result["message"]


def test_deepseek_v2_ignoring_norm_topk_prob_fails_invariants(run_suites, tmp_path):
    # Transformers 5.25.0's DeepseekV2TopkRouter never renormalizes, whatever norm_topk_prob is set to.
    case_file = _deepseek_case_file(tmp_path, norm_topk_prob=True)
    run = run_suites(
        "--case-file",
        case_file,
        "--cases",
        "deepseek-v2-variant",
        "--backends",
        "eager:fp32:eager:eager",
        "-k",
        "test_router_invariants",
        suites=SUITE_FILES,
    )

    result = run.result(check=check_id("test_router_invariants", "deepseek-v2-variant", "eager:fp32:eager:eager"))
    assert result["status"] == "fail"
    assert "model.layers.1.mlp.gate: norm_topk_prob is True but weights sum to" in result["message"]
