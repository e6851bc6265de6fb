"""What a suite's test function works with: the check being run and how it records its result.

A suite marks its test functions with :func:`check` to say which variants and inputs they
take; the pytest plugin parametrizes them over the selected cases and hands them a
:class:`Check` through the ``check`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from harness.backends import Variant
from harness.cases import Case
from harness.inputs import PLAIN, InputSpec

VariantChoice = Literal["all", "non-reference", "reference", "once"]


@dataclass(frozen=True)
class CheckSpec:
    """How the plugin parametrizes one suite function."""

    variants: VariantChoice = "all"
    inputs: tuple[InputSpec, ...] = (PLAIN,)
    applies_to: Callable[[Case], bool] | None = None
    dtypes: tuple[str, ...] | None = None
    families: tuple[str, ...] | None = None


def check(
    *,
    variants: VariantChoice = "all",
    inputs: Sequence[InputSpec] = (PLAIN,),
    applies_to: Callable[[Case], bool] | None = None,
    dtypes: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
) -> pytest.MarkDecorator:
    """Mark a suite function as a check over case x variant x input.

    ``variants="non-reference"`` leaves out the live reference (comparing it with itself
    says nothing). ``variants="once"`` makes one check per case under its reference
    variant, whatever ``--backends`` selects, for checks of the library rather than of a
    backend. ``applies_to`` keeps only the cases a suite is about (MoE cases, say),
    ``dtypes`` keeps only the variants of those dtypes, from every backend that has them,
    and ``families`` only the variants of those backend families (``("quantized",)``).
    """
    return pytest.mark.harness_check(
        CheckSpec(
            variants,
            tuple(inputs),
            applies_to,
            tuple(dtypes) if dtypes is not None else None,
            tuple(families) if families is not None else None,
        )
    )


@dataclass
class Check:
    """The result a running check builds up; the plugin writes it when the check ends."""

    suite: str
    case: Case
    variant: Variant
    input_spec: InputSpec
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    notes: list[str] = field(default_factory=list)

    def record(self, **metrics: Any) -> None:
        self.metrics.update(metrics)

    def note(self, text: str) -> None:
        """Add a line to the result's message, whatever the status."""
        self.notes.append(text)

    def fail(self, message: str) -> None:
        """End the check as a failure with ``message``, the text the report shows."""
        pytest.fail(message, pytrace=False)
