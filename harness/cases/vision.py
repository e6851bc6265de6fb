"""Vision encoders: Sapiens2, a high-resolution ViT.

Sapiens2 mixes full multi-head attention in its first and last layers with grouped-query
attention in between, so the tiny config has three layers to keep one of each. Its image
is not square (height x width), like the 1024 x 768 default of its image processor.
"""

from __future__ import annotations

from harness.cases._case import Case

SAPIENS2_TINY = Case(
    id="sapiens2-tiny",
    model_type="sapiens2",
    auto_class="AutoModel",
    source="tiny",
    tags=frozenset({"encoder", "vision"}),
    config_overrides={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        # head_dim = 64 / 4 = 16; the 2-D rope needs a multiple of 4.
        "num_attention_heads": 4,
        "num_key_value_attention_heads": 2,
        "num_first_full_attention_layers": 1,
        "num_last_full_attention_layers": 1,
        "image_size": [32, 24],
        "patch_size": 8,
        "num_register_tokens": 2,
    },
    inputs="image",
    description="Sapiens2 ViT backbone on a 32 x 24 image, 8-pixel patches, 2 register tokens.",
)

CASES = (SAPIENS2_TINY,)
