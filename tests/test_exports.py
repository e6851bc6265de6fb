"""Exports: CSV, parquet, and the markdown summary."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.exports import markdown_summary, write_table
from harness.results import Result, ResultsWriter, load_results


@pytest.fixture
def results(tmp_path):
    writer = ResultsWriter(tmp_path / "results.jsonl")
    writer.write(
        Result(
            run_id="r",
            suite="parity",
            case="a",
            backend="eager:fp32:sdpa",
            check="c1",
            status="pass",
            metrics={"cosine": 1.0},
        )
    )
    writer.write(
        Result(
            run_id="r",
            suite="parity",
            case="b",
            backend="eager:bf16:sdpa",
            check="c2",
            status="fail",
            message="max abs error | 2 > 1\nsecond line",
        )
    )
    writer.close()
    return load_results(tmp_path / "results.jsonl")


def test_csv_has_one_flat_row_per_check(tmp_path, results):
    path = write_table(results, tmp_path / "out.csv", "csv")
    frame = pd.read_csv(path)
    assert list(frame["check"]) == ["c1", "c2"]
    assert "metric.cosine" in frame.columns
    assert "metrics" not in frame.columns


def test_unknown_format_is_named(tmp_path, results):
    with pytest.raises(ValueError, match="unknown export format 'xlsx'"):
        write_table(results, tmp_path / "out.xlsx", "xlsx")


def test_markdown_lists_counts_and_failures(results):
    text = markdown_summary(results, "r")
    assert "1 pass | 1 fail | 0 error | 0 xfail | 0 skip" in text
    assert "| parity | 1 | 1 | 0 | 0 | 0 |" in text
    assert "| fail | parity | b | eager:bf16:sdpa |  | max abs error \\| 2 > 1 second line |" in text
