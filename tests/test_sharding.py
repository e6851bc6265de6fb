"""Shards: a deterministic, balanced split by case, and merging shard runs back."""

from __future__ import annotations

import json

import pytest

from harness.results import Result, ResultsWriter, iter_results, write_run_info
from harness.sharding import ShardError, assign_cases, load_durations, merge_runs, parse_shard


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0"])
def test_bad_shard_is_rejected(text):
    with pytest.raises(ShardError, match=f"invalid shard '{text}'"):
        parse_shard(text)


def test_assignment_balances_durations():
    durations = {"big": 100.0, "mid": 60.0, "small-a": 30.0, "small-b": 30.0}
    assignment = assign_cases({case: 1 for case in durations}, 2, durations)
    assert assignment == {"big": 1, "mid": 2, "small-a": 2, "small-b": 2}


def test_assignment_without_durations_balances_check_counts():
    counts = {"a": 10, "b": 4, "c": 4, "d": 2}
    assignment = assign_cases(counts, 2)
    loads = {1: 0, 2: 0}
    for case, shard in assignment.items():
        loads[shard] += counts[case]
    assert loads == {1: 10, 2: 10}


def test_assignment_is_deterministic_and_covers_every_case():
    counts = {f"case-{index}": index % 5 + 1 for index in range(23)}
    first = assign_cases(counts, 4)
    assert first == assign_cases(dict(reversed(list(counts.items()))), 4)
    assert set(first) == set(counts)
    assert set(first.values()) == {1, 2, 3, 4}


def test_durations_from_json_file(tmp_path):
    path = tmp_path / "durations.json"
    path.write_text(json.dumps({"llama-tiny": 3.5}))
    assert load_durations(path) == {"llama-tiny": 3.5}
    path.write_text("[1, 2]")
    with pytest.raises(ShardError, match="must map case ids to seconds"):
        load_durations(path)


def shard(folder, checks):
    writer = ResultsWriter(folder / "results.jsonl")
    for check in checks:
        writer.write(Result(run_id=folder.name, suite="parity", case="c", backend="b", check=check, status="pass"))
    writer.close()
    write_run_info(folder, {"run_id": folder.name, "started_at": folder.name, "cases": ["c"]})
    return folder


def test_merge_combines_results_under_the_new_run_id(tmp_path):
    first, second = shard(tmp_path / "s1", ["a", "b"]), shard(tmp_path / "s2", ["c"])
    merged = merge_runs([first, second], tmp_path, "merged")

    assert [result.check for result in iter_results(merged / "results.jsonl")] == ["a", "b", "c"]
    assert {result.run_id for result in iter_results(merged / "results.jsonl")} == {"merged"}
    assert json.loads((merged / "run.json").read_text())["shards"] == ["s1", "s2"]


def test_merge_rejects_a_check_in_two_shards(tmp_path):
    first, second = shard(tmp_path / "s1", ["a"]), shard(tmp_path / "s2", ["a"])
    with pytest.raises(ShardError, match="check 'a' is in both"):
        merge_runs([first, second], tmp_path, "merged")
