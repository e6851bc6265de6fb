"""Extra cases declared in a TOML file, and cases made from a local checkpoint folder.

A case file holds ``[[case]]`` tables::

    [[case]]
    id = "my-llama-tiny"
    model_type = "llama"
    tags = ["decoder"]                  # optional, inferred from the Auto class
    auto_class = "AutoModelForCausalLM" # optional, inferred from model_type
    inputs = "text"                     # optional, inferred from the Auto class
    seed = 0                            # optional
    [case.config]                       # config overrides, nested tables for sub-configs
    hidden_size = 64
    num_hidden_layers = 2

    [[case]]
    id = "my-finetune"
    checkpoint = "/models/my-finetune"  # a folder with config.json and weights
    trust_remote_code = false           # off unless the case asks for it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.cases._case import KNOWN_TAGS, Case
from harness.cases.infer import infer_auto_class, infer_inputs, infer_tags
from harness.inputs import input_builder_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_FIELDS = {
    "id",
    "model_type",
    "auto_class",
    "tags",
    "inputs",
    "seed",
    "config",
    "checkpoint",
    "trust_remote_code",
    "description",
    "opt_in",
}


class CaseFileError(ValueError):
    """A case file or checkpoint folder that cannot become a case; the message names the field."""


def load_case_file(path: str | Path) -> list[Case]:
    """Parse ``path`` into cases; raise CaseFileError naming the entry and field at fault."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaseFileError(f"case file {str(path)!r} not found; pass an existing TOML file to --case-file") from None
    except tomllib.TOMLDecodeError as error:
        raise CaseFileError(f"case file {str(path)!r} is not valid TOML: {error}") from None

    entries = document.get("case")
    if not isinstance(entries, list) or not entries:
        raise CaseFileError(f"case file {str(path)!r} declares no [[case]] tables")

    cases = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CaseFileError(f"{path}: case[{index}] must be a table, got {entry!r}")
        label = f"{path}: case[{index}]"
        if "id" in entry:
            label += f" {entry['id']!r}"
        case = _case_from_entry(label, entry)
        if case.id in seen:
            raise CaseFileError(f"{path}: case[{index}] {case.id!r}: field 'id' repeats an earlier case")
        seen.add(case.id)
        cases.append(case)
    return cases


def _case_from_entry(label: str, entry: dict[str, Any]) -> Case:
    def fail(field: str, problem: str) -> CaseFileError:
        return CaseFileError(f"{label}: field {field!r} {problem}")

    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise fail(unknown[0], f"is not a case field; known fields: {', '.join(sorted(_FIELDS))}")
    case_id = entry.get("id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise fail("id", "is missing or not a non-empty string")

    checkpoint = entry.get("checkpoint")
    model_type = entry.get("model_type")
    if checkpoint is None and model_type is None:
        raise fail("model_type", "is missing; give a model_type with config overrides, or a checkpoint path")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise fail("checkpoint", f"must be a path string, got {checkpoint!r}")
    if checkpoint is not None and "config" in entry:
        raise fail("config", "cannot be combined with 'checkpoint'; a checkpoint brings its own config")

    overrides = entry.get("config", {})
    if not isinstance(overrides, dict):
        raise fail("config", f"must be a table of config overrides, got {overrides!r}")

    checkpoint_config: dict[str, Any] = {}
    if checkpoint is not None:
        checkpoint_config = _read_checkpoint_config(Path(checkpoint).expanduser(), fail)
        model_type = model_type or checkpoint_config.get("model_type")
        if not model_type:
            raise fail("model_type", f"is missing and {checkpoint}/config.json has no model_type")
    if not isinstance(model_type, str):
        raise fail("model_type", f"must be a string, got {model_type!r}")

    auto_class = entry.get("auto_class")
    if auto_class is None:
        try:
            auto_class = infer_auto_class(model_type, checkpoint_config.get("architectures"))
        except ValueError as error:
            raise fail("model_type", str(error)) from None
    elif not isinstance(auto_class, str) or not auto_class.startswith("AutoModel"):
        raise fail(
            "auto_class", f"must name a Transformers Auto class such as AutoModelForCausalLM, got {auto_class!r}"
        )

    tags = entry.get("tags")
    if tags is None:
        tags = infer_tags(auto_class, checkpoint_config or overrides)
    elif not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise fail("tags", f"must be a list of strings, got {tags!r}")
    elif set(tags) - KNOWN_TAGS:
        bad = sorted(set(tags) - KNOWN_TAGS)[0]
        raise fail("tags", f"contains unknown tag {bad!r}; known tags: {', '.join(sorted(KNOWN_TAGS))}")

    inputs = entry.get("inputs", infer_inputs(auto_class))
    if inputs not in input_builder_names():
        raise fail("inputs", f"is {inputs!r}; known input kinds: {', '.join(input_builder_names())}")

    seed = entry.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise fail("seed", f"must be an integer, got {seed!r}")
    for flag in ("trust_remote_code", "opt_in"):
        if not isinstance(entry.get(flag, False), bool):
            raise fail(flag, f"must be true or false, got {entry[flag]!r}")

    return Case(
        id=case_id,
        model_type=model_type,
        auto_class=auto_class,
        source="checkpoint" if checkpoint else "tiny",
        tags=frozenset(tags),
        config_overrides=overrides,
        checkpoint=checkpoint,
        inputs=inputs,
        seed=seed,
        trust_remote_code=entry.get("trust_remote_code", False),
        description=str(entry.get("description", "")),
        opt_in=entry.get("opt_in", False),
    )


def _read_checkpoint_config(folder: Path, fail: Any) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise fail("checkpoint", f"points to {str(folder)!r}, which has no config.json")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise fail("checkpoint", f"has an unreadable config.json: {error}") from None


def checkpoint_case(path: str | Path) -> Case:
    """Make a case from a local checkpoint folder given with ``--checkpoint``."""
    folder = Path(path).expanduser()
    entry = {"id": f"checkpoint-{folder.resolve().name}", "checkpoint": str(folder)}
    return _case_from_entry(f"--checkpoint {str(folder)!r}", entry)
