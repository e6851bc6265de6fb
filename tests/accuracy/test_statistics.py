"""Accuracy statistics: standard errors, McNemar's test, paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.accuracy import compare_paired, mcnemar, mean_stderr


def test_mean_stderr_of_binary_scores():
    mean, stderr = mean_stderr([1, 1, 0, 0])

    assert mean == 0.5
    assert stderr == pytest.approx(math.sqrt(1 / 3) / 2)


def test_mcnemar_exact_for_few_discordant_items():
    reference = np.array([True] * 10 + [False] * 5)
    candidate = np.array([False] * 10 + [False] * 5)

    test = mcnemar(reference, candidate)

    assert (test.worse, test.better) == (10, 0)
    assert test.test == "mcnemar-exact"
    assert test.p_value == pytest.approx(2 / 2**10)


def test_mcnemar_exact_is_one_when_discordance_is_balanced():
    test = mcnemar([True, False, True, False], [False, True, True, False])

    assert test.p_value == 1.0


def test_mcnemar_chi_square_for_many_discordant_items():
    reference = np.array([True] * 30 + [False] * 10)
    candidate = np.array([False] * 30 + [True] * 10)

    test = mcnemar(reference, candidate)

    assert test.test == "mcnemar-chi2"
    # (|30 - 10| - 1)^2 / 40 = 9.025; its chi-square(1) tail is 0.00266.
    assert test.p_value == pytest.approx(0.002664, rel=1e-3)


def test_mcnemar_without_discordant_items():
    test = mcnemar([True, False], [True, False])

    assert (test.worse, test.better, test.p_value) == (0, 0, 1.0)


def test_mcnemar_rejects_unpaired_outcomes():
    with pytest.raises(ValueError, match="same items"):
        mcnemar([True, False], [True])


def test_paired_comparison_of_a_drop():
    reference_scores = [1, 1, 1, 1, 0, 0]
    candidate_scores = [1, 0, 0, 1, 0, 1]

    comparison = compare_paired(reference_scores, candidate_scores, list("aaaabb"), list("abbaba"))

    assert comparison.items == 6
    assert comparison.score == pytest.approx(0.5)
    assert comparison.reference_score == pytest.approx(4 / 6)
    assert comparison.delta == pytest.approx(-1 / 6)
    assert comparison.agreement == pytest.approx(3 / 6)
    assert (comparison.test.worse, comparison.test.better) == (2, 1)


def test_non_binary_scores_have_no_paired_test():
    comparison = compare_paired([0.5, 0.7], [0.4, 0.7], [0.5, 0.7], [0.4, 0.7])

    assert comparison.test is None
    assert "p_value" not in comparison.as_metrics()
