"""The consistency suite end to end: eager variants pass, and each planted fault fails its probe."""

from __future__ import annotations

import hypothesis
import pytest

from tests.planted import NoisyLayerBackend
from tests.planted_consistency import (
    BatchMateBackend,
    DroppingCacheBackend,
    DroppingStaticCacheBackend,
    NextTokenLeakBackend,
    PaddingLeakBackend,
    VerifyingDriftBackend,
)

SUITE = ("test_consistency.py",)


@pytest.fixture
def restore_hypothesis():
    """Undo what --hypothesis-profile and --hypothesis-seed set globally during an in-process run."""
    profile = hypothesis.settings.get_current_profile_name()
    seed = hypothesis.core.global_force_seed
    yield
    hypothesis.settings.load_profile(profile)
    hypothesis.core.global_force_seed = seed


def consistency_result(run, probe: str, case: str, backend: str):
    return run.result(check=f"suites/test_consistency.py::{probe}[{case}/{backend}/drawn]")


def test_consistency_passes_for_eager_fp32(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32", suites=SUITE)
    results = run.results

    judged = results[results["status"] != "skip"]
    assert set(judged["status"]) == {"pass"}
    assert set(judged["suite"]) == {"consistency"}
    assert len(judged) == 2 * 7
    skipped = results[results["status"] == "skip"]
    assert set(skipped["check"].str.extract(r"::(\w+)\[")[0]) == {"test_assisted_generation"}
    assert all("no assistant" in message for message in skipped["message"])


def test_causality_is_bitwise_for_fp32_eager(run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "eager:fp32:eager", "-k", "causality", suites=SUITE)
    result = consistency_result(run, "test_causality", "llama-tiny", "eager:fp32:eager")

    assert result["status"] == "pass"
    assert result["thresholds"]["bitwise"] is True
    assert result["metrics"]["bitwise"] is True
    assert result["metrics"]["top1_agreement"] == 1.0
    assert result["margin"] == 1.0


def test_causality_fails_when_next_token_leaks(run_suites, registered, restore_hypothesis):
    registered(NextTokenLeakBackend(position=5))
    run = run_suites(
        "--cases",
        "llama-tiny",
        "--backends",
        "leaky-causal:fp32:eager",
        "-k",
        "causality",
        "--hypothesis-profile",
        "harness-explore",
        "--hypothesis-seed",
        "0",
        suites=SUITE,
    )
    result = consistency_result(run, "test_causality", "llama-tiny", "leaky-causal:fp32:eager")

    assert result["status"] == "fail"
    assert "swapping the token at position 6 of row 0 changed the output at position 5" in result["message"]
    assert "first module that differs: model.layers.0.mlp [LlamaMLP]" in result["message"]
    assert result["metrics"]["leaked_into_position"] == 5
    assert result["metrics"]["first_differing_module"] == "model.layers.0.mlp"
    # Shrunk: one row, just long enough to hold position 6.
    assert "batch_size=1, seq_len=7, padding=none" in result["metrics"]["counterexample"]
    assert "minimal example: batch_size=1, seq_len=7" in result["message"]


def test_padding_invariance_fails_when_row_sees_its_padding(run_suites, registered):
    registered(PaddingLeakBackend())
    run = run_suites("--cases", "llama-tiny", "--backends", "leaky-padding:fp32:eager", "-k", "padding", suites=SUITE)
    result = consistency_result(run, "test_padding_invariance", "llama-tiny", "leaky-padding:fp32:eager")

    assert result["status"] == "fail"
    assert "the padded row's outputs differ from the same row run alone" in result["message"]
    assert result["metrics"]["first_differing_module"] == "model.layers.0.mlp"
    assert result["metrics"]["position_ids"] == "from attention mask"
    assert "padding=" in result["metrics"]["counterexample"]


def test_batch_invariance_fails_on_batch_mate(run_suites, registered):
    registered(BatchMateBackend())
    run = run_suites("--cases", "llama-tiny", "--backends", "batch-mate:fp32:eager", "-k", "batch", suites=SUITE)
    result = consistency_result(run, "test_batch_invariance", "llama-tiny", "batch-mate:fp32:eager")

    assert result["status"] == "fail"
    assert "changed when run alone" in result["message"] or "with other batch mates" in result["message"]
    assert result["metrics"]["first_differing_module"] == "model.layers.0.mlp"
    assert "batch_size=2" in result["metrics"]["counterexample"]


def test_cache_probes_fail_when_cache_drops_last_entry(run_suites, registered):
    registered(DroppingCacheBackend())
    run = run_suites("--cases", "llama-tiny", "--backends", "dropping-cache:fp32:eager", suites=SUITE)

    cache = consistency_result(run, "test_cache_consistency", "llama-tiny", "dropping-cache:fp32:eager")
    assert cache["status"] == "fail"
    assert "decoding from a cache after a" in cache["message"]
    assert "decode_steps=1" in cache["metrics"]["counterexample"]
    generation = consistency_result(run, "test_generation_with_cache", "llama-tiny", "dropping-cache:fp32:eager")
    assert generation["status"] == "fail"
    assert "greedy generation with a cache" in generation["message"]
    causality = consistency_result(run, "test_causality", "llama-tiny", "dropping-cache:fp32:eager")
    assert causality["status"] == "pass"


def test_static_cache_fails_on_dropped_entry(run_suites, registered):
    registered(DroppingStaticCacheBackend())
    run = run_suites(
        "--cases", "llama-tiny", "--backends", "dropping-static-cache:fp32:eager", "-k", "cache", suites=SUITE
    )

    static = consistency_result(run, "test_static_cache", "llama-tiny", "dropping-static-cache:fp32:eager")
    assert static["status"] == "fail"
    assert "greedy generation with a static cache picked other tokens than the reference" in static["message"]
    dynamic = consistency_result(run, "test_generation_with_cache", "llama-tiny", "dropping-static-cache:fp32:eager")
    assert dynamic["status"] == "pass"


def test_determinism_fails_when_backend_adds_fresh_noise(run_suites, registered):
    registered(NoisyLayerBackend(module_name="model.layers.1", scale=1e-3))
    run = run_suites("--cases", "llama-tiny", "--backends", "noisy-layer:fp32:eager", "-k", "determinism", suites=SUITE)
    result = consistency_result(run, "test_determinism", "llama-tiny", "noisy-layer:fp32:eager")

    assert result["status"] == "fail"
    assert "2 runs of the same batch differ" in result["message"]
    assert "not bitwise equal" in result["message"]


def test_assisted_generation_matches_greedy_for_gemma4(run_suites):
    run = run_suites(
        "--cases", "gemma4-moe-tiny", "--backends", "eager:fp32:sdpa:eager", "-k", "assisted", suites=SUITE
    )
    result = consistency_result(run, "test_assisted_generation", "gemma4-moe-tiny", "eager:fp32:sdpa:eager")

    assert result["status"] == "pass"
    assert result["metrics"]["tokens_equal"] is True
    assert "Gemma4AssistantForCausalLM" in result["metrics"]["drafter"]


def test_assisted_generation_fails_when_verification_drifts(run_suites, registered):
    registered(VerifyingDriftBackend())
    run = run_suites(
        "--cases", "gemma4-moe-tiny", "--backends", "verifying-drift:fp32:sdpa:eager", "-k", "assisted", suites=SUITE
    )
    result = consistency_result(run, "test_assisted_generation", "gemma4-moe-tiny", "verifying-drift:fp32:sdpa:eager")

    assert result["status"] == "fail"
    assert "assisted generation picked other tokens than the reference" in result["message"]
    assert "token 9 instead of" in result["message"]


def test_failure_replays_with_same_example(run_suites, registered):
    registered(BatchMateBackend())
    first = run_suites("--cases", "llama-tiny", "--backends", "batch-mate:fp32:eager", "-k", "batch", suites=SUITE)
    second = run_suites(
        "--cases", "llama-tiny", "--backends", "batch-mate:fp32:eager", "-k", "batch", suites=SUITE, run_id="again"
    )
    check = "suites/test_consistency.py::test_batch_invariance[llama-tiny/batch-mate:fp32:eager/drawn]"

    assert first.result(check=check)["status"] == "fail"
    assert first.result(check=check)["message"] == second.result(check=check)["message"]
    assert first.result(check=check)["metrics"]["deterministic_draw"] is True


def test_explore_profile_saves_failures_under_run_folder(run_suites, registered, restore_hypothesis):
    registered(BatchMateBackend())
    arguments = ("--cases", "llama-tiny", "--backends", "batch-mate:fp32:eager", "-k", "batch")
    run = run_suites(*arguments, "--hypothesis-profile", "harness-explore", suites=SUITE)
    check = "suites/test_consistency.py::test_batch_invariance[llama-tiny/batch-mate:fp32:eager/drawn]"
    result = run.result(check=check)

    assert result["status"] == "fail"
    assert result["metrics"]["deterministic_draw"] is False
    saved = [path for path in (run.run_dir / "hypothesis").rglob("*") if path.is_file()]
    assert saved, "the failing example was not saved in the run's example database"
