"""Infer a case's Auto class, inputs and tags from a model type or a checkpoint's config."""

from __future__ import annotations

from typing import Any

from transformers.models.auto import modeling_auto

# Auto classes in order of preference when a case does not name one: heads that produce
# logits over a vocabulary come first, since parity on logits says the most.
_PREFERRED_HEADS: tuple[tuple[str, str], ...] = (
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
    ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "AutoModelForImageTextToText"),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "AutoModelForSeq2SeqLM"),
    ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "AutoModelForSpeechSeq2Seq"),
    ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "AutoModelForMaskedLM"),
    ("MODEL_MAPPING_NAMES", "AutoModel"),
)

_INPUTS_BY_AUTO_CLASS = {
    "AutoModelForSeq2SeqLM": "seq2seq-text",
    "AutoModelForSpeechSeq2Seq": "speech-seq2seq",
}

_TAGS_BY_AUTO_CLASS = {
    "AutoModelForCausalLM": {"decoder"},
    "AutoModelForImageTextToText": {"decoder", "vision", "multimodal"},
    "AutoModelForSeq2SeqLM": {"encoder", "decoder", "seq2seq"},
    "AutoModelForSpeechSeq2Seq": {"audio", "encoder", "decoder", "seq2seq"},
    "AutoModelForMaskedLM": {"encoder"},
}

# Config attributes that give a model's routed expert count under some spelling.
EXPERT_COUNT_ATTRIBUTES = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def infer_auto_class(model_type: str, architectures: list[str] | None = None) -> str:
    """Choose the Auto class for ``model_type``, matching the checkpoint's architecture first."""
    if architectures:
        for mapping_name in dir(modeling_auto):
            if not mapping_name.endswith("_MAPPING_NAMES"):
                continue
            mapping = getattr(modeling_auto, mapping_name)
            if mapping.get(model_type) in architectures:
                return _auto_class_for_mapping(mapping_name)
    for mapping_name, class_name in _PREFERRED_HEADS:
        if model_type in getattr(modeling_auto, mapping_name, {}):
            return class_name
    raise ValueError(f"model_type {model_type!r} has no Auto class in this transformers version")


def _auto_class_for_mapping(mapping_name: str) -> str:
    for preferred_mapping, class_name in _PREFERRED_HEADS:
        if preferred_mapping == mapping_name:
            return class_name
    # MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES -> AutoModelForTokenClassification
    words = mapping_name.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").split("_")
    return "AutoModelFor" + "".join(word.capitalize() for word in words)


def infer_inputs(auto_class: str) -> str:
    return _INPUTS_BY_AUTO_CLASS.get(auto_class, "text")


def config_value(config: Any, names: tuple[str, ...]) -> Any:
    """Return the first attribute of ``names`` set on the config or its text sub-config."""
    for holder in (config, getattr(config, "text_config", None)):
        if holder is None:
            continue
        for name in names:
            value = holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)
            if value:
                return value
    return None


def infer_tags(auto_class: str, config: Any) -> frozenset[str]:
    tags = set(_TAGS_BY_AUTO_CLASS.get(auto_class, set()))
    if config_value(config, EXPERT_COUNT_ATTRIBUTES):
        tags.add("moe")
    return frozenset(tags)
