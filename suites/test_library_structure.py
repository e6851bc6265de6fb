"""Library structure: checks of Transformers itself, one per model type, on the meta device.

- The default config of every model type builds its ``AutoModel`` class. A default config
  that does not (a per-layer list left unset, say) fails users who start from it.
- In every vision-language and audio-language model, ``AutoModel`` carries no
  language-model head and the generation class wraps the ``AutoModel`` class, the layout
  Transformers v5.10.1 standardized for audio models to mirror vision models.

The checks run on automatic cases (one per model type) and need no built weights. They
run once per case whatever ``--backends`` selects, under the case's reference variant,
which plays no part.
"""

from __future__ import annotations

import pytest
import transformers

from harness.cases.automatic import MISSING_DEPENDENCY, default_config_failure, dependency_or, is_automatic
from harness.checks import check
from harness.structure import (
    base_class_name,
    build_on_meta,
    generation_class_name,
    language_model_kind,
    model_class,
    structure_findings,
)

SUITE = "library_structure"
RUN_BY_DEFAULT = True


def _is_language_multimodal(case) -> bool:
    return is_automatic(case) and language_model_kind(case.model_type) is not None


def _import_or_skip(name: str) -> type:
    try:
        return model_class(name)
    except (ImportError, AttributeError) as error:
        not_covered = dependency_or(error, MISSING_DEPENDENCY, f"cannot import {name}")
        pytest.skip(str(not_covered))


@check(variants="once", applies_to=is_automatic)
def test_default_config_builds(case, variant, input_spec, check):
    failure = default_config_failure(case.model_type)
    check.record(model_class=base_class_name(case.model_type))
    if failure is None:
        return
    if failure.category == MISSING_DEPENDENCY:
        pytest.skip(str(failure))
    check.fail(f"the default config does not build: {failure.detail}")


def _build_pair(case, base_class: type, generation_class: type):
    """Build the base and generation classes on the meta device, from the tiny config when it constructs.

    The layout does not depend on sizes, and a full-size default model takes seconds to
    build even on the meta device; the default config is the fallback.
    """
    try:
        config = transformers.CONFIG_MAPPING[case.model_type](**case.config_overrides)
        return build_on_meta(base_class, config), build_on_meta(generation_class, config)
    except Exception:  # noqa: BLE001 - the default config decides
        config = transformers.CONFIG_MAPPING[case.model_type]()
        return build_on_meta(base_class, config), build_on_meta(generation_class, config)


@check(variants="once", applies_to=_is_language_multimodal)
def test_multimodal_layout(case, variant, input_spec, check):
    kind = language_model_kind(case.model_type)
    base_class = _import_or_skip(base_class_name(case.model_type))
    generation_class = _import_or_skip(generation_class_name(case.model_type))
    try:
        base, generation = _build_pair(case, base_class, generation_class)
    except Exception as error:  # noqa: BLE001 - reported by test_default_config_builds
        pytest.skip(f"the default config does not build {case.model_type}: {type(error).__name__}: {error}")

    findings = structure_findings(base, generation)
    check.record(
        kind=kind,
        base_class=base_class.__name__,
        generation_class=generation_class.__name__,
        deviations=[finding.rule for finding in findings],
    )
    if findings:
        check.fail(f"{kind} model departs from the standard layout: " + "; ".join(f.detail for f in findings))
