"""Automatic cases: a tiny seeded model for every model type Transformers ships.

Model types come from Transformers' auto mappings at run time, so a new release is covered
without code changes. Each type with an ``AutoModel`` class becomes a case ``auto-<type>``
tagged ``automatic``. Its config is the default config shrunk by :mod:`harness.cases.shrink`.
Its Auto class is the first head, in the order of :mod:`harness.cases.infer`, that the type
has. Its inputs are synthesized from the forward signature by :mod:`harness.cases.synthesize`.

A type that cannot run is not an error of the harness: building an automatic case raises
:class:`NotCovered` with one of :data:`CATEGORIES`, and the check is skipped with a message
``not covered (<category>): <detail>`` that the coverage section of the report counts.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers.models.auto import modeling_auto

from harness.cases._case import Case
from harness.cases.build import quiet_transformers
from harness.cases.infer import _PREFERRED_HEADS, infer_tags
from harness.cases.shrink import rotary_half, split_evenly, tiny_config_dict, walk
from harness.cases.synthesize import InputsUnavailable, forward_parameters, synthesize
from harness.coverage_categories import (
    AUTOMATIC_TAG,
    CATEGORIES,
    DEFAULT_CONFIG_FAILS,
    INPUTS_UNAVAILABLE,
    MISSING_DEPENDENCY,
    SHRINKING_INCONSISTENT,
    NotCovered,
    not_covered_category,
)

log = logging.getLogger(__name__)

__all__ = [
    "AUTOMATIC_TAG",
    "CATEGORIES",
    "DEFAULT_CONFIG_FAILS",
    "INPUTS_UNAVAILABLE",
    "MISSING_DEPENDENCY",
    "SHRINKING_INCONSISTENT",
    "NotCovered",
    "automatic_case",
    "automatic_cases",
    "build_automatic",
    "not_covered_category",
]

CASE_PREFIX = "auto-"
SELECTOR_PREFIX = "auto:"

# Transformers' message when a model needs a package that is not installed.
_REQUIRES_LIBRARY = re.compile(
    r"requires the (\S+) library|requires `?(\w+)`? to be installed|No module named '?(\w+)", re.I
)


def model_types() -> list[str]:
    """Return every model type that has an ``AutoModel`` class, in the mapping's order."""
    return list(modeling_auto.MODEL_MAPPING_NAMES)


def class_name(mapping_name: str, model_type: str) -> str | None:
    value = getattr(modeling_auto, mapping_name, {}).get(model_type)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value


def choose_auto_class(model_type: str) -> str:
    """Return the first Auto class with logits (then ``AutoModel``) that ``model_type`` maps to.

    A head whose class takes another config class is passed over: Mllama's causal LM, for
    one, takes the text config alone, so from_pretrained rejects the full config.
    """
    config_class = transformers.CONFIG_MAPPING[model_type]
    for mapping_name, auto_class in _PREFERRED_HEADS:
        name = class_name(mapping_name, model_type)
        if not name or not hasattr(transformers, name):
            continue
        try:
            head_config = getattr(getattr(transformers, name), "config_class", None)
        except ImportError:
            head_config = None
        if head_config is not None and not issubclass(config_class, head_config):
            continue
        # Evolla is named in the image-text-to-text mapping, which still rejects its config.
        if config_class in getattr(getattr(transformers, auto_class), "_model_mapping", {config_class: None}):
            return auto_class
    return "AutoModel"


def model_class_for(model_type: str, auto_class: str) -> type:
    """Import the model class ``auto_class`` picks for ``model_type``; raise NotCovered for a missing package."""
    mapping_name = next(m for m, a in _PREFERRED_HEADS if a == auto_class)
    name = class_name(mapping_name, model_type)
    try:
        cls = getattr(transformers, name)
        cls.forward  # noqa: B018 - touching the class raises the missing-package error of a lazy placeholder
    except (ImportError, AttributeError, ModuleNotFoundError) as error:
        raise dependency_or(error, DEFAULT_CONFIG_FAILS, f"cannot import {name}") from error
    return cls


def dependency_or(error: BaseException, category: str, context: str) -> NotCovered:
    """Classify ``error``: a missing optional dependency when its message names a package, else ``category``."""
    text = f"{type(error).__name__}: {error}"
    match = _REQUIRES_LIBRARY.search(str(error))
    if isinstance(error, ImportError) or match:
        package = next((group for group in match.groups() if group), "?") if match else "?"
        return NotCovered(MISSING_DEPENDENCY, f"{context}: needs {package}: {_first_line(text)}")
    return NotCovered(category, f"{context}: {_first_line(text)}")


def _first_line(text: str) -> str:
    """Return the message on one line (validation errors put the reason on later lines), cut to 400 characters."""
    return " ".join(text.split())[:400]


def default_config(model_type: str) -> Any:
    return transformers.CONFIG_MAPPING[model_type]()


@functools.cache
def automatic_case(model_type: str) -> Case:
    """Return the automatic case of ``model_type``; its build raises NotCovered when it cannot run."""
    if model_type not in modeling_auto.MODEL_MAPPING_NAMES:
        raise ValueError(f"model_type {model_type!r} has no AutoModel class in transformers {transformers.__version__}")
    quiet_transformers()
    auto_class = choose_auto_class(model_type)
    overrides: dict[str, Any] = {}
    tags = {AUTOMATIC_TAG}
    inputs = "synthesized-unpadded"
    try:
        config = default_config(model_type)
        overrides = tiny_config_dict(config.to_dict())
        tags |= infer_tags(auto_class, config)
    except Exception as error:  # noqa: BLE001 - recorded when the case is built
        log.debug("default config of %s fails: %s", model_type, error)
    try:
        cls = model_class_for(model_type, auto_class)
        parameters, _ = forward_parameters(cls)
        if {"input_ids", "attention_mask"} <= parameters:
            inputs = "synthesized"
        add_implicit_rope_sections(overrides, cls)
    except NotCovered:
        pass
    return Case(
        id=f"{CASE_PREFIX}{model_type}",
        model_type=model_type,
        auto_class=auto_class,
        source="tiny",
        tags=frozenset(tags),
        config_overrides=overrides,
        inputs=inputs,
        description=f"{model_type} default config shrunk automatically, {auto_class}",
    )


# Modeling code that falls back to a hard-coded multimodal rotary split when the config has
# none, e.g. `config.rope_parameters.get("mrope_section", [16, 24, 24])` in Qwen2-VL: the
# split fits the default head size only, so a shrunk config must name its own.
_IMPLICIT_ROPE_SECTION = re.compile(r"""get\(\s*["']mrope_section["']\s*,\s*\[([\d,\s]+)\]""")


def _modeling_sources(overrides: dict[str, Any], cls: type) -> list[str]:
    """Return the source of the model's module and of the base model module of every sub-config type."""
    modules = [sys.modules.get(cls.__module__)]
    for node in walk(overrides):
        name = class_name("MODEL_MAPPING_NAMES", str(node.get("model_type", "")))
        sub_class = getattr(transformers, name, None) if name else None
        if sub_class is not None:
            modules.append(sys.modules.get(sub_class.__module__))
    sources = []
    for module in dict.fromkeys(module for module in modules if module is not None):
        try:
            sources.append(inspect.getsource(module))
        except (OSError, TypeError):
            continue
    return sources


def add_implicit_rope_sections(overrides: dict[str, Any], cls: type) -> None:
    """Write a rescaled ``mrope_section`` into shrunk text configs whose modeling code assumes one."""
    matches = (_IMPLICIT_ROPE_SECTION.search(source) for source in _modeling_sources(overrides, cls))
    match = next((found for found in matches if found), None)
    if not match:
        return
    default = [int(part) for part in match.group(1).split(",") if part.strip()]
    for node in walk(overrides):
        rope = node.get("rope_parameters")
        if not isinstance(rope, dict) or "mrope_section" in rope or "vision" in str(node.get("model_type", "")):
            continue
        rope["mrope_section"] = split_evenly(rotary_half(node), default)


def automatic_cases() -> list[Case]:
    return [automatic_case(model_type) for model_type in model_types()]


def is_automatic(case: Case) -> bool:
    return AUTOMATIC_TAG in case.tags


@functools.cache
def default_config_failure(model_type: str) -> NotCovered | None:
    """Return why the default config of ``model_type`` does not build its AutoModel class on the meta device, or None.

    The outcome is cached per process, since both building an automatic case and the
    library structure suite ask for it.
    """
    name = class_name("MODEL_MAPPING_NAMES", model_type)
    try:
        cls = getattr(transformers, name)
        cls.forward  # noqa: B018 - a lazy placeholder raises its missing-package error here
    except (ImportError, AttributeError) as error:
        return dependency_or(error, DEFAULT_CONFIG_FAILS, f"cannot import {name}")
    try:
        config = default_config(model_type)
    except Exception as error:  # noqa: BLE001 - classified here
        return dependency_or(error, DEFAULT_CONFIG_FAILS, f"the {model_type} default config")
    try:
        with torch.device("meta"):
            cls._from_config(config)
    except Exception as error:  # noqa: BLE001 - classified here
        return dependency_or(error, DEFAULT_CONFIG_FAILS, f"{cls.__name__} on the default config")
    return None


def check_default_config(case: Case) -> None:
    """Raise NotCovered when the default config of the case's type does not build on the meta device."""
    failure = default_config_failure(case.model_type)
    if failure is not None:
        raise NotCovered(failure.category, failure.detail)


def build_automatic(case: Case, build: Any, root: Path | None = None) -> Any:
    """Build an automatic case with ``build`` (build_case's own steps), classifying every failure.

    The default config is tried on the meta device first, so a failure of the shrunk config
    is a shrinking problem only when the default one builds. Inputs are synthesized once
    here on the fp32 model, so a type whose forward the harness cannot feed is known
    before any check runs.
    """
    check_default_config(case)
    try:
        built = build(case, root)
    except NotCovered:
        raise
    except Exception as error:  # noqa: BLE001 - classified below
        raise dependency_or(error, SHRINKING_INCONSISTENT, "building the shrunk config") from error

    from harness.inputs import PLAIN

    try:
        synthesize(built.config, PLAIN)
    except InputsUnavailable as error:
        raise NotCovered(INPUTS_UNAVAILABLE, str(error)) from error
    except Exception as error:  # noqa: BLE001 - classified below
        raise dependency_or(error, SHRINKING_INCONSISTENT, "building the tiny model for synthesized inputs") from error
    return built
