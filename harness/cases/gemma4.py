"""Gemma 4 cases: the encoder-free unified model, the vision model, and the text MoE block.

Tiny Gemma 4 configs need more than small sizes:

- The multimodal token ids default to 255_999 and above; they must lie inside the shrunk
  vocabulary, or the embedding lookup raises IndexError.
- ``vocab_size_per_layer_input`` and ``hidden_size_per_layer_input`` shrink too, else the
  per-layer embedding table alone has ~134M parameters; ``vocab_size_per_layer_input``
  must cover the largest text id.
- ``global_head_dim`` sets the head size of full-attention layers (default 512).
- Gemma 4 Unified has no vision or audio encoder: each merged patch of raw pixels and each
  640-sample audio frame (40 ms at 16 kHz) is one soft token. Its vision
  ``output_proj_dims`` must equal ``mm_embed_dim`` (the embedder reads it as its input
  width, whatever its docstring says), and audio without ``input_features_mask`` is
  dropped without an error. Its processor needs torchvision, so inputs are built here.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.cases._case import Case
from harness.inputs import InputSpec, ModelInputs, generator_for, padding_mask, register_input_builder

_SPECIAL_TOKEN_IDS = {
    "image_token_id": 500,
    "boi_token_id": 501,
    "eoi_token_id": 502,
    "video_token_id": 503,
    "audio_token_id": 504,
    "boa_token_id": 505,
    "eoa_token_index": 506,
}
_VOCAB_SIZE = 512

# Values of mm_token_type_ids, as the processors write them.
_TEXT_TOKEN = 0
_IMAGE_TOKEN = 1
_AUDIO_TOKEN = 3

# Leading text positions in every row; left padding must fit inside them so that it never
# hides a multimodal placeholder.
_TEXT_PREFIX = 4

# Two layers, one of each attention type; the config forces the last one to full attention.
_TEXT_CONFIG = {
    "vocab_size": _VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 32,
    "layer_types": ["sliding_attention", "full_attention"],
    "sliding_window": 8,
    "max_position_embeddings": 256,
}

GEMMA4_UNIFIED_TINY = Case(
    id="gemma4-unified-tiny",
    model_type="gemma4_unified",
    auto_class="AutoModelForMultimodalLM",
    source="tiny",
    tags=frozenset({"decoder", "multimodal", "vision", "audio"}),
    config_overrides={
        "text_config": dict(_TEXT_CONFIG),
        "vision_config": {
            # One soft token is a merged patch of (4 x 2)^2 x 3 = 192 raw pixel values.
            "patch_size": 4,
            "pooling_kernel_size": 2,
            "mm_embed_dim": 64,
            "output_proj_dims": 64,
            "mm_posemb_size": 32,
        },
        "audio_config": {"audio_embed_dim": 640},
        **_SPECIAL_TOKEN_IDS,
    },
    inputs="gemma4-unified",
    description="Encoder-free Gemma 4: raw pixel patches and 16 kHz audio frames projected into the LM.",
)

GEMMA4_TINY = Case(
    id="gemma4-tiny",
    model_type="gemma4",
    auto_class="AutoModelForImageTextToText",
    source="tiny",
    tags=frozenset({"decoder", "multimodal", "vision"}),
    config_overrides={
        "text_config": {
            **_TEXT_CONFIG,
            "vocab_size_per_layer_input": _VOCAB_SIZE,
            "hidden_size_per_layer_input": 8,
            # Image tokens attend to each other both ways (needs mm_token_type_ids).
            "use_bidirectional_attention": "vision",
        },
        "vision_config": {
            # The production width: the pooler scales its output by sqrt(hidden_size) (33.9
            # here), so float16 overflow there depends on it. About 1.1M parameters.
            "hidden_size": 1152,
            # Standardize the pooled features (std_bias, std_scale), which is what keeps the
            # float32-scaled features inside the float16 range once cast back.
            "standardize": True,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            # The axial 2-D rope splits head_dim in four, so it must be a multiple of 4.
            "head_dim": 16,
            "patch_size": 4,
            "pooling_kernel_size": 2,
            "position_embedding_size": 64,
        },
        "audio_config": None,
        **_SPECIAL_TOKEN_IDS,
    },
    inputs="gemma4-vision",
    description="Gemma 4 with its vision tower and pooler, dense text model.",
)

GEMMA4_MOE_TINY = Case(
    id="gemma4-moe-tiny",
    # gemma4_text maps to Gemma4ForCausalLM: the text model alone, no vision or audio tower.
    model_type="gemma4_text",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=frozenset({"decoder", "moe"}),
    config_overrides={
        **_TEXT_CONFIG,
        "hidden_size_per_layer_input": 0,
        "vocab_size_per_layer_input": _VOCAB_SIZE,
        # Every layer runs the dense MLP and the MoE block side by side and sums them.
        "enable_moe_block": True,
        "num_experts": 8,
        "top_k_experts": 2,
        "moe_intermediate_size": 32,
    },
    description="Gemma 4 text model with its MoE block (8 experts, top-2).",
)

CASES = (GEMMA4_UNIFIED_TINY, GEMMA4_TINY, GEMMA4_MOE_TINY)


def image_to_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Split (batch, 3, H, W) images into (batch, patches, patch_size^2 * 3) row-major patches.

    Within a patch the layout is (row, column, channel), as Gemma 4's image processors lay it out.
    """
    batch, channels, height, width = images.shape
    rows, columns = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, columns, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1)
    return patches.reshape(batch, rows * columns, patch_size * patch_size * channels)


def patch_positions(batch: int, rows: int, columns: int) -> torch.Tensor:
    """Return (batch, rows * columns, 2) patch positions as (x, y), in row-major order."""
    grid_rows, grid_columns = torch.meshgrid(torch.arange(rows), torch.arange(columns), indexing="ij")
    positions = torch.stack([grid_columns.flatten(), grid_rows.flatten()], dim=-1)
    return positions.unsqueeze(0).expand(batch, -1, -1).clone()


def _text_ids(config: Any, spec: InputSpec) -> torch.Tensor:
    """Draw text ids below every multimodal id, with BOS first."""
    first_special = min(getattr(config, name) for name in _SPECIAL_TOKEN_IDS)
    ids = torch.randint(3, first_special, (spec.batch_size, spec.seq_len), generator=generator_for(spec))
    ids[:, 0] = config.get_text_config().bos_token_id
    return ids


def _write_span(ids: torch.Tensor, start: int, begin: int, placeholder: int, end: int, count: int) -> int:
    """Write begin, placeholder x count, end into every row from ``start``; return the next position."""
    ids[:, start] = begin
    ids[:, start + 1 : start + 1 + count] = placeholder
    ids[:, start + 1 + count] = end
    return start + count + 2


def _check_fits(spec: InputSpec, required: int, kind: str) -> None:
    if spec.seq_len < required:
        raise ValueError(f"{kind} inputs need seq_len >= {required} (text prefix and placeholders), got {spec.seq_len}")
    if spec.padding == "right":
        raise ValueError(f"{kind} inputs end in placeholders, so right padding would hide them; use left padding")
    if spec.padding == "left" and spec.pad_len > _TEXT_PREFIX:
        raise ValueError(f"{kind} inputs allow at most {_TEXT_PREFIX} left-padding positions, got {spec.pad_len}")


def _finish(config: Any, spec: InputSpec, ids: torch.Tensor, tensors: dict[str, torch.Tensor]) -> ModelInputs:
    mask = padding_mask(spec)
    text_config = config.get_text_config()
    ids = ids.masked_fill(mask == 0, text_config.pad_token_id or 0)
    token_types = torch.full_like(ids, _TEXT_TOKEN)
    token_types[ids == config.image_token_id] = _IMAGE_TOKEN
    if getattr(config, "audio_token_id", None) is not None:
        token_types[ids == config.audio_token_id] = _AUDIO_TOKEN
    return ModelInputs(
        {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": token_types, **tensors}, valid=mask.bool()
    )


@register_input_builder("gemma4-unified", paddable=True)
def gemma4_unified_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Text, one 2 x 2-patch image and 120 ms of 16 kHz audio per row.

    Each row holds 4 image placeholders (one per merged patch) and 3 audio placeholders (one
    per 640-sample frame). Pixels are raw values in [0, 1]; audio is a sine tone with noise.
    """
    generator = generator_for(spec, stream=1)
    merged = config.vision_config.patch_size * config.vision_config.pooling_kernel_size
    rows = columns = 2
    image_tokens = rows * columns
    frame = config.audio_config.audio_embed_dim
    audio_tokens = 3
    _check_fits(spec, _TEXT_PREFIX + image_tokens + 2 + audio_tokens + 2, "gemma4-unified")

    images = torch.rand(spec.batch_size, 3, rows * merged, columns * merged, generator=generator)
    samples = audio_tokens * frame
    seconds = torch.arange(samples) / 16_000
    frequency = 100.0 + 900.0 * torch.rand(spec.batch_size, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(spec.batch_size, 1, generator=generator)
    noise = 0.05 * torch.randn(spec.batch_size, samples, generator=generator)
    waveform = 0.5 * torch.sin(2 * math.pi * frequency * seconds + phase) + noise

    ids = _text_ids(config, spec)
    position = _write_span(
        ids, _TEXT_PREFIX, config.boi_token_id, config.image_token_id, config.eoi_token_id, image_tokens
    )
    _write_span(ids, position, config.boa_token_id, config.audio_token_id, config.eoa_token_index, audio_tokens)
    return _finish(
        config,
        spec,
        ids,
        {
            "pixel_values": image_to_patches(images, merged),
            "image_position_ids": patch_positions(spec.batch_size, rows, columns),
            "input_features": waveform.reshape(spec.batch_size, audio_tokens, frame),
            "input_features_mask": torch.ones(spec.batch_size, audio_tokens, dtype=torch.bool),
        },
    )


@register_input_builder("gemma4-vision", paddable=True)
def gemma4_vision_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Text and one image of (2k x 2k) patches per row, k the pooling kernel: 4 soft tokens.

    Patches are raw pixels in [0, 1] laid out as Gemma4ImageProcessorPil lays them out,
    without the padding patches the processor appends.
    """
    vision = config.vision_config
    kernel = vision.pooling_kernel_size
    grid = 2 * kernel
    image_tokens = (grid // kernel) ** 2
    _check_fits(spec, _TEXT_PREFIX + image_tokens + 2, "gemma4-vision")

    size = grid * vision.patch_size
    images = torch.rand(spec.batch_size, 3, size, size, generator=generator_for(spec, stream=1))
    ids = _text_ids(config, spec)
    _write_span(ids, _TEXT_PREFIX, config.boi_token_id, config.image_token_id, config.eoi_token_id, image_tokens)
    return _finish(
        config,
        spec,
        ids,
        {
            "pixel_values": image_to_patches(images, vision.patch_size),
            "image_position_ids": patch_positions(spec.batch_size, grid, grid),
        },
    )
