"""The curated catalog and case selection."""

from __future__ import annotations

import pytest
import torch

from harness.cases import UnknownCaseError, curated_cases, get_case, select_cases
from harness.cases.build import build_case, build_config, load_model, parameter_count

CURATED_IDS = [
    "gemma4-unified-tiny",
    "gemma4-tiny",
    "gemma4-moe-tiny",
    "mellum-tiny",
    "deepseek-ocr2-tiny",
    "sapiens2-tiny",
    "qwen3-moe-tiny",
    "mixtral-tiny",
    "olmoe-tiny",
    "deepseek-v2-tiny",
    "llama-tiny",
    "gpt2-tiny",
    "bert-tiny",
    "t5-tiny",
    "whisper-tiny",
    "smollm2-135m",
    "minilm-l6",
]
TINY = [case for case in curated_cases() if case.source == "tiny" and not case.opt_in]


def test_catalog_holds_the_curated_ids_in_order():
    ids = [case.id for case in curated_cases() if not case.opt_in]
    assert ids == CURATED_IDS


def test_moe_cases_are_tagged_moe():
    moe = {case.id for case in curated_cases() if case.is_moe and not case.opt_in}
    assert moe == {
        "gemma4-moe-tiny",
        "mellum-tiny",
        "deepseek-ocr2-tiny",
        "qwen3-moe-tiny",
        "mixtral-tiny",
        "olmoe-tiny",
        "deepseek-v2-tiny",
    }


# gemma4-tiny keeps the production vision width (1152): its vision pooler scales by
# sqrt(hidden_size), and fp16 overflow there depends on that scale. About 1.15M parameters.
PARAMETER_LIMITS = {"gemma4-tiny": 1_200_000}


@pytest.mark.parametrize("case", TINY, ids=lambda case: case.id)
def test_tiny_config_constructs_small_model(case):
    count = parameter_count(case)
    assert count is not None
    assert count < PARAMETER_LIMITS.get(case.id, 1_000_000)


def test_mellum_full_shape_has_production_moe_shape():
    case = get_case("mellum-full-shape")
    config = build_config(case)

    assert (config.num_local_experts, config.num_experts_per_tok, config.num_hidden_layers) == (64, 8, 28)
    assert case.opt_in
    assert case.devices == frozenset({"cuda"})


def test_unknown_case_lists_closest_ids():
    with pytest.raises(UnknownCaseError) as error:
        get_case("melum-tiny")
    message = str(error.value)
    assert message.startswith("unknown case 'melum-tiny'; closest known ids: mellum-tiny")
    assert "\n" not in message


def test_default_selection_skips_opt_in_and_other_devices():
    ids = [case.id for case in select_cases(None, "cpu")]
    assert ids == CURATED_IDS


def test_default_selection_on_cuda_still_leaves_opt_in_out():
    assert "mellum-full-shape" not in [case.id for case in select_cases("default", "cuda")]


def test_opt_in_case_selected_by_name():
    assert [case.id for case in select_cases("mellum-full-shape", "cuda")] == ["mellum-full-shape"]


def test_tag_selection_keeps_catalog_order():
    ids = [case.id for case in select_cases("tag:seq2seq", "cpu")]
    assert ids == ["t5-tiny", "whisper-tiny"]


def test_unknown_tag_is_rejected():
    with pytest.raises(UnknownCaseError, match="unknown tag 'mo'"):
        select_cases("tag:mo", "cpu")


def test_seeded_build_is_bit_identical(tmp_path):
    case = get_case("qwen3-moe-tiny")
    first = load_model(build_case(case, tmp_path / "a"), torch.float32)
    second = load_model(build_case(case, tmp_path / "b"), torch.float32)

    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name


def test_build_is_cached_by_config(tmp_path):
    case = get_case("llama-tiny")
    first = build_case(case, tmp_path)
    marker = first.folder / ".harness-complete"
    written = marker.stat().st_mtime_ns

    second = build_case(case, tmp_path)
    assert second.folder == first.folder
    assert marker.stat().st_mtime_ns == written
