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
    close = difflib.get_close_matches(case_id, list(known), n=3, cutoff=0.5)
    hint = f"closest known ids: {', '.join(close)}" if close else f"known ids: {', '.join(sorted(known))}"
    raise UnknownCaseError(f"unknown case {case_id!r}; {hint} (see 'harness list cases')")


def runs_on(case: Case, device: str) -> bool:
    return device in case.devices


def select_cases(selector: str | None, device: str, extra: Sequence[Case] = ()) -> list[Case]:
    """Resolve a comma-separated selector to cases, in catalog order.

    Tokens: a case id; ``default`` (every curated case that is not opt-in and fits the
    device, plus the extra cases); ``curated``; ``tag:<tag>`` (default cases with the tag).
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
        elif token.startswith("tag:"):
            tag = token.removeprefix("tag:")
            if tag not in KNOWN_TAGS:
                raise UnknownCaseError(f"unknown tag {tag!r} in {token!r}; known tags: {', '.join(sorted(KNOWN_TAGS))}")
            matches = [case for case in defaults if tag in case.tags]
        else:
            matches = [get_case(token, extra)]
        for case in matches:
            chosen[case.id] = case

    order = list(known)
    return sorted(chosen.values(), key=lambda case: order.index(case.id))
