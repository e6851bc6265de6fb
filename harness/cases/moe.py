"""Mixture-of-Experts text decoders: Mellum, Qwen3-MoE, Mixtral, OLMoE, DeepSeek-V2.

All route each token to ``num_experts_per_tok`` of 8 experts and store the experts as fused
3-D parameters. Things a tiny config must set:

- Mellum: ``layer_types`` (the default makes every layer full attention, so
  ``sliding_window`` is never used); per-layer lists regenerate from the layer count.
- Mixtral and OLMoE size their experts with ``intermediate_size``; the others with
  ``moe_intermediate_size``. OLMoE's default eos id 50279 lies outside a tiny vocabulary.
- DeepSeek-V2: ``num_experts_per_tok`` (the default None breaks ``torch.topk``), the
  multi-head latent attention ranks and head dims. Group-limited routing only changes the
  selection when top-k exceeds ``topk_group``, hence top-3 with 2 of 4 groups.
"""

from __future__ import annotations

from harness.cases._case import Case

_DECODER_MOE = frozenset({"decoder", "moe"})

_ATTENTION = {
    "vocab_size": 512,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}

MELLUM_TINY = Case(
    id="mellum-tiny",
    model_type="mellum",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=_DECODER_MOE,
    config_overrides={
        **_ATTENTION,
        "intermediate_size": 128,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "norm_topk_prob": True,
        # Shorter than the 16-token inputs, so the sliding layer masks something.
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    description="Mellum code model (Qwen3-MoE style) with one sliding-window layer.",
)

# The production MoE shape: 64 experts, 8 active, 28 layers, every other size the config's
# default. About 12.1e9 parameters, so it runs on GPUs only and only when named.
MELLUM_FULL_SHAPE = Case(
    id="mellum-full-shape",
    model_type="mellum",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=_DECODER_MOE,
    config_overrides={"num_local_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 28},
    opt_in=True,
    devices=frozenset({"cuda"}),
    description="Mellum at its production shape (64 experts, 8 active, 28 layers), random weights.",
)

QWEN3_MOE_TINY = Case(
    id="qwen3-moe-tiny",
    model_type="qwen3_moe",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=_DECODER_MOE,
    config_overrides={
        **_ATTENTION,
        "intermediate_size": 128,
        "num_key_value_heads": 2,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "norm_topk_prob": True,
    },
    description="Qwen3-MoE decoder, normalized top-2 weights.",
)

MIXTRAL_TINY = Case(
    id="mixtral-tiny",
    model_type="mixtral",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=_DECODER_MOE,
    config_overrides={
        **_ATTENTION,
        "intermediate_size": 32,
        "num_key_value_heads": 2,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
    description="Mixtral decoder; routing weights stay fp32 in every dtype.",
)

OLMOE_TINY = Case(
    id="olmoe-tiny",
    model_type="olmoe",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=_DECODER_MOE,
    config_overrides={
        **_ATTENTION,
        "intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "pad_token_id": 1,
        "eos_token_id": 2,
    },
    description="OLMoE decoder, unnormalized top-2 weights.",
)

DEEPSEEK_V2_TINY = Case(
    id="deepseek-v2-tiny",
    model_type="deepseek_v2",
    auto_class="AutoModelForCausalLM",
    source="tiny",
    tags=_DECODER_MOE,
    config_overrides={
        **_ATTENTION,
        "intermediate_size": 128,
        # Layer 0 is dense, layers 1 and 2 are MoE.
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "moe_intermediate_size": 32,
        "num_experts_per_tok": 3,
        "topk_method": "group_limited_greedy",
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 1.0,
    },
    description="DeepSeek-V2 with multi-head latent attention, a shared expert and group-limited routing.",
)

CASES = (MELLUM_TINY, QWEN3_MOE_TINY, MIXTRAL_TINY, OLMOE_TINY, DEEPSEEK_V2_TINY, MELLUM_FULL_SHAPE)
