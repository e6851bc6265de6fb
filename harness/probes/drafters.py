"""Draft models for assisted generation: a Gemma 4 assistant built to fit a tiny target model.

Transformers (from 5.x) drafts tokens for Gemma 4 targets with ``Gemma4AssistantForCausalLM``
(and its Unified twin): a small model that reads the target's key/value states
(``shared_kv_states``) and its last hidden state, so its attention heads must match the
target's. The probe builds one with seeded random weights from the target's own text
config. Greedy assisted generation must give the target's greedy tokens whatever the
drafter proposes, so random weights (which get few drafts accepted) test the verification
and cache rollback as well as a trained drafter would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers

# Text config model_type of a target -> (assistant config class, assistant model class).
_ASSISTANTS = {
    "gemma4_text": ("Gemma4AssistantConfig", "Gemma4AssistantForCausalLM"),
    "gemma4_unified_text": ("Gemma4UnifiedAssistantConfig", "Gemma4UnifiedAssistantForCausalLM"),
}

# Text config fields an assistant must leave at zero or off (Gemma4AssistantConfig.validate_architecture).
_ASSISTANT_TEXT_OVERRIDES = {
    "hidden_size_per_layer_input": 0,
    "vocab_size_per_layer_input": 0,
    "enable_moe_block": False,
    "use_double_wide_mlp": False,
}
_NOT_CONSTRUCTOR_ARGUMENTS = ("model_type", "architectures", "transformers_version", "dtype")


@dataclass
class Drafter:
    """A drafter: the keyword arguments that make ``generate`` draft with it, and a description."""

    description: str
    generate_options: dict[str, Any]


def drafter_unavailable_reason(model: torch.nn.Module) -> str | None:
    """Return why no drafter can be built for ``model``, or None when :func:`build_drafter` can."""
    text_config = model.config.get_text_config()
    model_type = getattr(text_config, "model_type", model.config.model_type)
    names = _ASSISTANTS.get(model_type)
    if names is None:
        if getattr(text_config, "num_mtp_layers", None):
            return (
                f"model_type {model_type!r} declares multi-token-prediction layers, whose drafter "
                "loads from checkpoint weights; this probe builds Gemma 4 assistants only"
            )
        return (
            f"transformers {transformers.__version__} ships no assistant or multi-token-prediction "
            f"drafter for model_type {model_type!r}"
        )
    if not all(hasattr(transformers, name) for name in names):
        return f"transformers {transformers.__version__} lacks {names[1]}"
    return None


def build_drafter(model: torch.nn.Module, *, draft_tokens: int, seed: int) -> Drafter:
    """Build a seeded random-weight Gemma 4 assistant that fits ``model``, in its dtype and on its device."""
    reason = drafter_unavailable_reason(model)
    if reason is not None:
        raise ValueError(reason)
    text_config = model.config.get_text_config()
    config_name, model_name = _ASSISTANTS[text_config.model_type]

    values = {key: value for key, value in text_config.to_dict().items() if key not in _NOT_CONSTRUCTOR_ARGUMENTS}
    values.update(_ASSISTANT_TEXT_OVERRIDES)
    # Every assistant layer reads the target's key/value states instead of computing its own.
    values["num_kv_shared_layers"] = values["num_hidden_layers"]
    assistant_text = type(text_config)(**values)
    config = getattr(transformers, config_name)(
        text_config=assistant_text, backbone_hidden_size=text_config.hidden_size
    )

    parameter = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        assistant = getattr(transformers, model_name)._from_config(
            config, attn_implementation=text_config._attn_implementation, dtype=parameter.dtype
        )
    assistant.to(parameter.device).eval()
    assistant.generation_config.num_assistant_tokens = draft_tokens
    return Drafter(
        description=f"{model_name} with random weights, {draft_tokens} draft tokens per round",
        generate_options={"assistant_model": assistant},
    )
