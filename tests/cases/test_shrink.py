"""The shrinker keeps coupled sizes consistent on hand-made config dicts and on real default configs."""

from __future__ import annotations

import pytest
import transformers

from harness.cases.shrink import HEAD_DIM, HIDDEN, VOCAB, tiny_config_dict


def _decoder(**extra):
    config = {
        "model_type": "toy",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
    }
    config.update(extra)
    return config


def test_widths_heads_and_vocabulary_shrink():
    tiny = tiny_config_dict(_decoder())

    assert tiny["hidden_size"] == HIDDEN
    assert tiny["num_attention_heads"] * tiny["head_dim"] == HIDDEN
    assert tiny["head_dim"] == HEAD_DIM
    assert tiny["num_key_value_heads"] < tiny["num_attention_heads"]
    assert tiny["intermediate_size"] < 11008
    assert tiny["vocab_size"] == VOCAB
    assert tiny["num_hidden_layers"] == 2


def test_width_coupled_to_another_subconfig_follows_it():
    config = {
        "model_type": "toy_vlm",
        "vision_config": {"model_type": "toy_vision", "hidden_size": 1152, "num_attention_heads": 16},
        "text_config": _decoder(model_type="toy_text"),
        "projector_input_width": 1152,
    }
    tiny = tiny_config_dict(config)

    assert tiny["vision_config"]["hidden_size"] == HIDDEN
    assert tiny["projector_input_width"] == HIDDEN


def test_layer_prefix_keeps_every_layer_type():
    types = (["sliding_attention"] * 5 + ["full_attention"]) * 4
    tiny = tiny_config_dict(_decoder(num_hidden_layers=24, layer_types=types))

    assert tiny["num_hidden_layers"] == 6
    assert tiny["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]


def test_period_and_offset_keep_an_attention_layer():
    tiny = tiny_config_dict(
        _decoder(attn_layer_period=8, attn_layer_offset=4, expert_layer_period=2, expert_layer_offset=1)
    )

    layers = tiny["num_hidden_layers"]
    assert any(index % 8 == 4 for index in range(layers))
    assert any(index % 2 == 1 for index in range(layers))


def test_layer_index_lists_and_layer_dicts_are_cut_with_the_prefix():
    tiny = tiny_config_dict(
        _decoder(global_attn_indexes=[2, 5, 8, 11], per_layer_config={"3": {"window": 1}, "20": {"window": 2}})
    )

    layers = tiny["num_hidden_layers"]
    assert all(index < layers for index in tiny["global_attn_indexes"])
    assert 2 in tiny["global_attn_indexes"]
    assert set(tiny["per_layer_config"]) == {"3"}


def test_special_token_ids_move_inside_the_vocabulary_without_colliding():
    tiny = tiny_config_dict(_decoder(bos_token_id=128000, eos_token_id=[128001, 128009], image_token_id=151655))

    ids = [tiny["bos_token_id"], *tiny["eos_token_id"], tiny["image_token_id"]]
    assert all(0 <= token < VOCAB for token in ids)
    assert len(set(ids)) == len(ids)


def test_rotary_sections_add_up_to_half_the_rotary_width():
    tiny = tiny_config_dict(_decoder(rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24]}))

    assert sum(tiny["rope_parameters"]["mrope_section"]) == tiny["head_dim"] // 2
    assert len(tiny["rope_parameters"]["mrope_section"]) == 3


def test_patch_grid_sizes_follow_the_new_grid():
    vision = {"model_type": "toy_vision", "image_size": 224, "patch_size": 16, "num_patches": 196, "num_positions": 197}
    tiny = tiny_config_dict(vision)

    side = tiny["image_size"] // tiny["patch_size"]
    assert tiny["image_size"] % tiny["patch_size"] == 0
    assert tiny["num_patches"] == side * side
    assert tiny["num_positions"] == side * side + 1


def test_missing_active_expert_count_is_set():
    tiny = tiny_config_dict(_decoder(n_routed_experts=160, num_experts_per_tok=None, n_group=8, topk_group=3))

    assert tiny["n_routed_experts"] == 4
    assert tiny["num_experts_per_tok"] == 2
    assert tiny["topk_group"] <= tiny["n_group"]


@pytest.mark.parametrize("model_type", ["llama", "qwen2_vl", "jamba", "gemma3", "swin", "wav2vec2", "t5"])
def test_real_default_configs_shrink_to_a_valid_config(model_type):
    default = transformers.CONFIG_MAPPING[model_type]()
    tiny = transformers.CONFIG_MAPPING[model_type](**tiny_config_dict(default.to_dict()))

    text = tiny.get_text_config()
    assert getattr(text, "hidden_size", HIDDEN) <= HIDDEN
    assert getattr(text, "vocab_size", VOCAB) <= VOCAB
