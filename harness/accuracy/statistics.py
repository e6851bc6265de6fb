"""Statistics of per-item outcomes: accuracy with its standard error, and paired comparisons.

Two variants answer the same items, so their outcomes are paired. McNemar's test looks
only at the discordant items (right for one, wrong for the other): under the null
hypothesis each discordant item is equally likely to go either way. With fewer than 25
discordant items the exact binomial test is used; above that, the chi-square
approximation with continuity correction, the usual textbook rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EXACT_BELOW = 25


def mean_stderr(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Return the mean and its standard error (sample standard deviation over sqrt n), as lm-eval reports them."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no items to average")
    if array.size == 1:
        return float(array[0]), math.nan
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(array.size))


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired binary outcomes.

    ``worse`` counts items the reference got right and the candidate wrong; ``better``
    the other way round.
    """

    worse: int
    better: int
    p_value: float
    test: str


def mcnemar(reference: Sequence[bool] | np.ndarray, candidate: Sequence[bool] | np.ndarray) -> McNemar:
    """Test whether the candidate's and the reference's correctness differ, item by item (two-sided)."""
    reference = np.asarray(reference, dtype=bool)
    candidate = np.asarray(candidate, dtype=bool)
    if reference.shape != candidate.shape:
        raise ValueError(f"paired outcomes need the same items: {reference.shape[0]} against {candidate.shape[0]}")
    worse = int(np.sum(reference & ~candidate))
    better = int(np.sum(~reference & candidate))
    discordant = worse + better
    if discordant == 0:
        return McNemar(worse, better, 1.0, "mcnemar-exact")
    if discordant < EXACT_BELOW:
        tail = sum(math.comb(discordant, k) for k in range(min(worse, better) + 1)) / 2.0**discordant
        return McNemar(worse, better, min(1.0, 2.0 * tail), "mcnemar-exact")
    statistic = (abs(worse - better) - 1.0) ** 2 / discordant
    # The chi-square survival function with one degree of freedom.
    return McNemar(worse, better, math.erfc(math.sqrt(statistic / 2.0)), "mcnemar-chi2")


@dataclass(frozen=True)
class PairedComparison:
    """A candidate's scores on a task next to the reference's, on the same items."""

    items: int
    score: float
    score_stderr: float
    reference_score: float
    # Candidate minus reference: negative is a drop.
    delta: float
    delta_stderr: float
    agreement: float
    agreement_stderr: float
    # None when the scores are not all 0 or 1, where McNemar's test does not apply.
    test: McNemar | None

    def as_metrics(self) -> dict[str, Any]:
        metrics = {key: value for key, value in asdict(self).items() if key != "test"}
        if self.test is not None:
            metrics.update(
                items_worse=self.test.worse,
                items_better=self.test.better,
                p_value=self.test.p_value,
                paired_test=self.test.test,
            )
        return metrics


def compare_paired(
    reference_scores: Sequence[float] | np.ndarray,
    candidate_scores: Sequence[float] | np.ndarray,
    reference_answers: Sequence[Any],
    candidate_answers: Sequence[Any],
) -> PairedComparison:
    """Compare per-item scores and answers of a candidate with the reference's, item by item."""
    reference = np.asarray(reference_scores, dtype=np.float64)
    candidate = np.asarray(candidate_scores, dtype=np.float64)
    if reference.shape != candidate.shape or len(reference_answers) != len(candidate_answers):
        raise ValueError(f"paired outcomes need the same items: {reference.size} against {candidate.size}")

    score, score_stderr = mean_stderr(candidate)
    delta, delta_stderr = mean_stderr(candidate - reference)
    agreeing = [a == b for a, b in zip(reference_answers, candidate_answers, strict=True)]
    agreement, agreement_stderr = mean_stderr(agreeing)
    binary = bool(np.isin(reference, (0.0, 1.0)).all() and np.isin(candidate, (0.0, 1.0)).all())
    return PairedComparison(
        items=int(candidate.size),
        score=score,
        score_stderr=score_stderr,
        reference_score=float(reference.mean()),
        delta=delta,
        delta_stderr=delta_stderr,
        agreement=agreement,
        agreement_stderr=agreement_stderr,
        test=mcnemar(reference == 1.0, candidate == 1.0) if binary else None,
    )
