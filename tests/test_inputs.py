"""Deterministic inputs: padding, validity masks, multimodal placeholders."""

from __future__ import annotations

import pytest
import torch

from harness.cases import get_case
from harness.cases.build import build_config
from harness.inputs import (
    LEFT_PADDED,
    PADDED,
    PLAIN,
    RIGHT_PADDED,
    InputSpec,
    build_inputs,
    resolve_padding,
)


def inputs_for(case_id, spec=PLAIN):
    case = get_case(case_id)
    return build_inputs(case.inputs, build_config(case), spec)


def test_same_spec_gives_identical_inputs():
    first = inputs_for("llama-tiny")
    second = inputs_for("llama-tiny")
    assert torch.equal(first.tensors["input_ids"], second.tensors["input_ids"])


def test_seed_changes_the_tokens():
    case = get_case("llama-tiny")
    config = build_config(case)
    first = build_inputs("text", config, InputSpec(seed=0))
    second = build_inputs("text", config, InputSpec(seed=1))
    assert not torch.equal(first.tensors["input_ids"], second.tensors["input_ids"])


def test_left_padding_masks_first_row_start():
    inputs = inputs_for("llama-tiny", LEFT_PADDED)
    mask = inputs.tensors["attention_mask"]

    assert mask[0, :4].tolist() == [0, 0, 0, 0]
    assert bool(mask[0, 4:].all())
    assert bool(mask[1].all())
    assert torch.equal(inputs.valid, mask.bool())
    assert (inputs.tensors["input_ids"][0, :4] == 0).all()


def test_right_padding_masks_first_row_end():
    mask = inputs_for("bert-tiny", RIGHT_PADDED).tensors["attention_mask"]
    assert mask[0, -4:].tolist() == [0, 0, 0, 0]
    assert bool(mask[0, :-4].all())


def test_auto_padding_picks_the_side_users_pad():
    assert resolve_padding(PADDED, "text", pads_left=True).name == "left-padded"
    assert resolve_padding(PADDED, "text", pads_left=False).name == "right-padded"
    assert resolve_padding(PADDED, "image", pads_left=False) is None
    assert resolve_padding(PLAIN, "image", pads_left=False) is PLAIN


def test_unknown_input_kind_lists_known_kinds():
    with pytest.raises(ValueError, match="unknown input kind 'smell'; known kinds: .*text"):
        build_inputs("smell", None, PLAIN)


def test_whisper_features_fill_the_encoder_window():
    case = get_case("whisper-tiny")
    config = build_config(case)
    features = build_inputs(case.inputs, config, PLAIN).tensors["input_features"]
    assert features.shape == (2, config.num_mel_bins, 2 * config.max_source_positions)


def test_sapiens2_image_is_height_by_width():
    pixels = inputs_for("sapiens2-tiny").tensors["pixel_values"]
    assert pixels.shape == (2, 3, 32, 24)


def test_gemma4_unified_placeholders_match_soft_tokens():
    case = get_case("gemma4-unified-tiny")
    config = build_config(case)
    tensors = build_inputs(case.inputs, config, PLAIN).tensors
    ids = tensors["input_ids"]

    image_tokens = int((ids[0] == config.image_token_id).sum())
    audio_tokens = int((ids[0] == config.audio_token_id).sum())
    assert image_tokens == tensors["pixel_values"].shape[1]
    assert audio_tokens == tensors["input_features"].shape[1]
    assert tensors["input_features"].shape[-1] == 640  # 40 ms at 16 kHz
    assert int(ids.max()) < config.text_config.vocab_size


def test_gemma4_rejects_right_padding():
    with pytest.raises(ValueError, match="right padding would hide them"):
        inputs_for("gemma4-tiny", RIGHT_PADDED)


def test_deepseek_ocr2_text_surrounds_the_image():
    case = get_case("deepseek-ocr2-tiny")
    config = build_config(case)
    inputs = build_inputs(case.inputs, config, LEFT_PADDED)
    ids = inputs.tensors["input_ids"]

    assert ids.shape == (2, 16 + 145)
    assert int((ids[1] == config.image_token_id).sum()) == 145
    assert inputs.tensors["attention_mask"][0, :4].sum() == 0
