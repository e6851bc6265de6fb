"""DeepSeek-OCR-2: a SAM ViT-B + Qwen2 hybrid vision encoder feeding a DeepSeek-V2 MoE decoder.

Its default config does not construct (``text_config.mlp_layer_types`` is None). SAM's last
``downsample_channels`` must equal the Qwen2 encoder's hidden size, because SAM features
and the encoder's learned queries form one sequence. Every view becomes a fixed 144 learned
queries (256 for grids over 12 x 12) plus one separator token, whatever the image size,
while ``DeepseekOcr2Processor`` counts ceil(view / 64)^2 per view: the two agree only for
768 and 1024 pixel views, so the tiny inputs are built here.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.cases._case import Case
from harness.inputs import InputSpec, ModelInputs, generator_for, padding_mask, register_input_builder

DEEPSEEK_OCR2_TINY = Case(
    id="deepseek-ocr2-tiny",
    model_type="deepseek_ocr2",
    auto_class="AutoModelForImageTextToText",
    source="tiny",
    tags=frozenset({"decoder", "moe", "vision", "multimodal"}),
    config_overrides={
        "image_token_id": 511,
        "text_config": {
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_shared_experts": 1,
            "moe_intermediate_size": 32,
            "topk_method": "greedy",
            "mlp_layer_types": ["dense", "sparse"],
        },
        "vision_config": {
            "sam_config": {
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "mlp_dim": 64,
                "image_size": 128,
                "patch_size": 16,
                "window_size": 4,
                "global_attn_indexes": [1],
                "output_channels": 16,
                "downsample_channels": [32, 32],
            },
            "encoder_config": {
                "vocab_size": 512,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
            },
        },
    },
    inputs="deepseek-ocr2",
    description="DeepSeek-OCR-2: SAM + Qwen2 hybrid encoder and a DeepSeek-V2 MoE language model.",
)

CASES = (DEEPSEEK_OCR2_TINY,)


def image_token_count(config: Any, image_size: int) -> int:
    """Return the placeholders one image without local views fills: its learned queries plus a separator.

    SAM cuts the image into an (image_size / patch_size) grid; two stride-2 convolutions
    halve each side twice.
    """
    sam = config.vision_config.sam_config
    side = math.ceil(math.ceil(math.ceil(image_size / sam.patch_size) / 2) / 2)
    queries = 144 if side * side <= 144 else 256
    return queries + 1


@register_input_builder("deepseek-ocr2", paddable=True)
def deepseek_ocr2_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Text around one image per row; ``spec.seq_len`` counts text tokens only (16 gives 161 positions).

    Pixels are uniform in [-1, 1], the range of the image processor's output (mean and
    std 0.5). Padding applies to the text before the image.
    """
    generator = generator_for(spec)
    text = config.text_config
    image_size = config.vision_config.sam_config.image_size
    image_id = config.image_token_id
    prefix = spec.seq_len // 2
    if spec.padding == "left" and spec.pad_len > prefix:
        raise ValueError(f"deepseek-ocr2 inputs allow at most {prefix} left-padding positions, got {spec.pad_len}")
    if spec.padding == "right":
        raise ValueError("deepseek-ocr2 inputs pad on the left only; right padding would split the image span")

    # Text ids skip the placeholder id.
    text_ids = torch.randint(0, text.vocab_size - 1, (spec.batch_size, spec.seq_len), generator=generator)
    text_ids = text_ids + (text_ids >= image_id).long()
    image_ids = torch.full((spec.batch_size, image_token_count(config, image_size)), image_id, dtype=torch.long)
    ids = torch.cat([text_ids[:, :prefix], image_ids, text_ids[:, prefix:]], dim=1)

    text_mask = padding_mask(spec)
    mask = torch.cat([text_mask[:, :prefix], torch.ones_like(image_ids), text_mask[:, prefix:]], dim=1)
    ids = ids.masked_fill(mask == 0, text.pad_token_id if text.pad_token_id is not None else 0)

    channels = config.vision_config.sam_config.num_channels
    pixels = torch.rand(spec.batch_size, channels, image_size, image_size, generator=generator) * 2 - 1
    return ModelInputs({"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}, valid=mask.bool())
