"""The expected-status file: read, validate, update from a run."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.expected import Expectation, ExpectedStatusError, load_expected, update_expected, write_expected


def results(*rows):
    return pd.DataFrame([{"check": check, "status": status, "message": message} for check, status, message in rows])


def test_round_trip_keeps_checks_with_odd_characters(tmp_path):
    path = tmp_path / "expected.toml"
    check = 'suites/test_parity.py::test_parity[a/"b"/c\\d]'
    write_expected(path, {check: Expectation(check, "reason with 'quotes'")})
    assert load_expected(path) == {check: Expectation(check, "reason with 'quotes'")}


def test_missing_file_means_nothing_expected(tmp_path):
    assert load_expected(tmp_path / "none.toml") == {}


def test_entry_without_reason_is_rejected(tmp_path):
    path = tmp_path / "expected.toml"
    path.write_text('[[expected]]\ncheck = "c"\n')
    with pytest.raises(ExpectedStatusError, match=r"expected\[0\]: field 'reason' is missing or empty"):
        load_expected(path)


def test_update_adds_failures_drops_fixed_and_keeps_unrun(tmp_path):
    path = tmp_path / "expected.toml"
    write_expected(
        path,
        {
            "fixed": Expectation("fixed", "was broken"),
            "still": Expectation("still", "known bug"),
            "not-run": Expectation("not-run", "other device"),
        },
    )
    update = update_expected(
        path,
        results(("fixed", "pass", ""), ("still", "xfail", "known bug"), ("new", "fail", "max abs error 2 > 1\nmore")),
        run_id="run-7",
    )

    assert update.added == ["new"]
    assert update.removed == ["fixed"]
    assert update.kept == ["still"]
    expectations = load_expected(path)
    assert sorted(expectations) == ["new", "not-run", "still"]
    assert expectations["new"].reason == "failing since run run-7: max abs error 2 > 1"
    assert expectations["still"].reason == "known bug"


def test_update_uses_the_given_reason(tmp_path):
    path = tmp_path / "expected.toml"
    update_expected(path, results(("c", "error", "boom")), run_id="r", reason="upstream issue 123")
    assert load_expected(path)["c"].reason == "upstream issue 123"
