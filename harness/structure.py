"""Structure of Transformers' model classes, read from the auto mappings and models built on the meta device.

Two properties hold for every model type in a conforming library:

- the default config builds the model (the meta device allocates nothing, so a full-size
  default costs only the modules' construction);
- in a vision-language or audio-language model, the base class (``AutoModel``) carries no
  language-model head, and the generation class wraps an instance of the base class. This
  is the layout Transformers v5.10.1 made audio models share with vision models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers.models.auto import modeling_auto

VISION_LANGUAGE = "vision-language"
AUDIO_LANGUAGE = "audio-language"

# Generation classes of audio-language models, most specific first.
_AUDIO_GENERATION_MAPPINGS = (
    "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
    "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
)
_HEAD_NAMES = ("lm_head", "language_model_head", "text_head")


def _class_name(mapping_name: str, model_type: str) -> str | None:
    value = getattr(modeling_auto, mapping_name, {}).get(model_type)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value


def model_class(name: str) -> type:
    """Import a model class by name; a missing optional package raises ImportError."""
    cls = getattr(transformers, name)
    cls.forward  # noqa: B018 - a lazy placeholder raises its missing-package error here
    return cls


def build_on_meta(cls: type, config: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return cls._from_config(config)


def _sub_config_names(config: Any) -> list[str]:
    names = list(getattr(type(config), "sub_configs", {}) or {})
    return names or [name for name in vars(config) if name.endswith("_config")]


@functools.cache
def language_model_kind(model_type: str) -> str | None:
    """Return VISION_LANGUAGE, AUDIO_LANGUAGE or None for a model type."""
    if _class_name("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", model_type):
        return VISION_LANGUAGE
    if not any(_class_name(mapping, model_type) for mapping in _AUDIO_GENERATION_MAPPINGS[:2]):
        return None
    try:
        config = transformers.CONFIG_MAPPING[model_type]()
    except Exception:  # noqa: BLE001 - a type whose config fails is reported by the default-config check
        return None
    names = _sub_config_names(config)
    has_audio = any("audio" in name or "speech" in name for name in names)
    has_text = any("text" in name or "language" in name or "decoder" in name for name in names)
    return AUDIO_LANGUAGE if has_audio and has_text else None


def generation_class_name(model_type: str) -> str | None:
    kind = language_model_kind(model_type)
    if kind == VISION_LANGUAGE:
        return _class_name("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", model_type)
    if kind == AUDIO_LANGUAGE:
        for mapping in _AUDIO_GENERATION_MAPPINGS:
            name = _class_name(mapping, model_type)
            if name:
                return name
    return None


def base_class_name(model_type: str) -> str | None:
    return _class_name("MODEL_MAPPING_NAMES", model_type)


@dataclass(frozen=True)
class StructureFinding:
    """One way a model's classes depart from the standard layout."""

    rule: str
    detail: str


def language_model_head(model: torch.nn.Module) -> str | None:
    """Return the name of a language-model head the model carries at its top level, or None."""
    for name in _HEAD_NAMES:
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    if callable(get_output_embeddings):
        try:
            head = get_output_embeddings()
        except (AttributeError, NotImplementedError):
            head = None
        if isinstance(head, torch.nn.Module):
            for name, module in model.named_children():
                if module is head:
                    return name
            return "get_output_embeddings()"
    return None


def wrapped_base(generation: torch.nn.Module, base_class: type) -> str | None:
    """Return the name of the child of ``generation`` that is an instance of ``base_class``, or None."""
    for name, module in generation.named_children():
        if isinstance(module, base_class):
            return name
    return None


def structure_findings(base: torch.nn.Module, generation: torch.nn.Module) -> list[StructureFinding]:
    """Compare a base model and its generation class with the standard layout."""
    findings = []
    head = language_model_head(base)
    if head is not None:
        findings.append(
            StructureFinding(
                "base model has no LM head",
                f"{type(base).__name__} (AutoModel) carries a language-model head at {head!r}",
            )
        )
    if wrapped_base(generation, type(base)) is None:
        children = ", ".join(f"{name}: {type(module).__name__}" for name, module in generation.named_children())
        findings.append(
            StructureFinding(
                "generation class wraps the base model",
                f"{type(generation).__name__} has no child of class {type(base).__name__} (children: {children})",
            )
        )
    return findings
