"""The model catalog: curated cases, cases from case files and checkpoint folders, and selection.

Public API: :class:`Case`, :func:`curated_cases`, :func:`get_case`, :func:`select_cases`,
:func:`load_case_file`, :func:`checkpoint_case`, :func:`build_case`, :func:`load_model`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from harness.cases._case import KNOWN_TAGS, Case
from harness.cases.build import BuiltCase, build_case, load_model
from harness.cases.case_file import CaseFileError, checkpoint_case, load_case_file
from harness.cases.curated import CURATED

__all__ = [
    "BuiltCase",
    "Case",
    "CaseFileError",
    "UnknownCaseError",
    "automatic_case",
    "automatic_cases",
    "build_case",
    "checkpoint_case",
    "curated_cases",
    "get_case",
    "load_case_file",
    "load_model",
    "select_cases",
]


class UnknownCaseError(ValueError):
    """A case id or selector that matches no known case."""


def curated_cases() -> tuple[Case, ...]:
    return CURATED


# harness.cases.automatic imports all of transformers and torch; it is imported on first use,
# so that `harness run` can start pytest before those imports happen.
_CASE_PREFIX = "auto-"
_SELECTOR_PREFIX = "auto:"


def automatic_case(model_type: str) -> Case:
    """Return the automatic case of ``model_type`` (see harness.cases.automatic)."""
    from harness.cases import automatic

    return automatic.automatic_case(model_type)


def automatic_cases() -> list[Case]:
    """Return an automatic case for every model type with an AutoModel class."""
    from harness.cases import automatic

    return automatic.automatic_cases()


def _known(extra: Iterable[Case]) -> dict[str, Case]:
    known = {case.id: case for case in CURATED}
    for case in extra:
        known[case.id] = case
    return known


def get_case(case_id: str, extra: Iterable[Case] = ()) -> Case:
    """Return the case with ``case_id``; raise UnknownCaseError listing the closest ids."""
    known = _known(extra)
    if case_id in known:
        return known[case_id]
    if case_id.startswith(_CASE_PREFIX):
        return _automatic(case_id.removeprefix(_CASE_PREFIX), case_id)
    close = difflib.get_close_matches(case_id, list(known), n=3, cutoff=0.5)
    hint = f"closest known ids: {', '.join(close)}" if close else f"known ids: {', '.join(sorted(known))}"
    raise UnknownCaseError(f"unknown case {case_id!r}; {hint} (see 'harness list cases')")


def _automatic(model_type: str, token: str) -> Case:
    from harness.cases.automatic import model_types

    if model_type in model_types():
        return automatic_case(model_type)
    close = difflib.get_close_matches(model_type, model_types(), n=3, cutoff=0.6)
    hint = f"closest model types: {', '.join(close)}" if close else "see transformers.CONFIG_MAPPING for model types"
    raise UnknownCaseError(f"{token!r} names no model type with an AutoModel class; {hint}")


def runs_on(case: Case, device: str) -> bool:
    return device in case.devices


def select_cases(selector: str | None, device: str, extra: Sequence[Case] = ()) -> list[Case]:
    """Resolve a comma-separated selector to cases, in catalog order.

    Tokens: a case id; ``default`` (every curated case that is not opt-in and fits the
    device, plus the extra cases); ``curated``; ``tag:<tag>`` (default cases with the tag);
    ``all-tiny`` (an automatic case for every model type with an AutoModel class);
    ``auto:<model_type>`` (the automatic case of one type, id ``auto-<model_type>``).
    No selector means ``default``. Naming an opt-in case by id selects it.
    """
    known = _known(extra)
    defaults = [case for case in known.values() if not case.opt_in and runs_on(case, device)]
    tokens = [token.strip() for token in (selector or "default").split(",") if token.strip()]
    if not tokens:
        raise UnknownCaseError(f"empty case selector {selector!r}; name case ids or 'default'")

    chosen: dict[str, Case] = {}
    for token in tokens:
        if token == "default":
            matches = defaults
        elif token == "curated":
            matches = [case for case in CURATED if runs_on(case, device)]
        elif token == "all-tiny":
            matches = automatic_cases()
        elif token.startswith(_SELECTOR_PREFIX):
            matches = [_automatic(token.removeprefix(_SELECTOR_PREFIX), token)]
        elif token.startswith("tag:"):
            tag = token.removeprefix("tag:")
            if tag not in KNOWN_TAGS:
                raise UnknownCaseError(f"unknown tag {tag!r} in {token!r}; known tags: {', '.join(sorted(KNOWN_TAGS))}")
            matches = [case for case in defaults if tag in case.tags]
        else:
            matches = [get_case(token, extra)]
        for case in matches:
            chosen[case.id] = case

    # Catalog order first, then automatic cases in the order they were selected.
    order = {case_id: index for index, case_id in enumerate([*known, *(i for i in chosen if i not in known)])}
    return sorted(chosen.values(), key=lambda case: order[case.id])
