"""Checks known to fail: a committed TOML file of check ids, each with a reason.

Listed checks run as expected failures (pytest xfail, not strict): a listed check that
fails is recorded as ``xfail``; one that passes is recorded as ``pass`` and the report
calls it fixed. ``harness expected update RUN`` rewrites the file from a run::

    [[expected]]
    check = "suites/test_parity.py::test_parity[gemma4-tiny/eager:fp16:sdpa/plain]"
    reason = "fp16 overflow in the vision pooler; fixed upstream in transformers 5.26"
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_FILE = Path("expected_status.toml")

_HEADER = """\
# Checks known to fail, each with its reason. They run as expected failures (xfail); a
# listed check that passes is reported as fixed. Rewrite with 'harness expected update RUN'.
"""


class ExpectedStatusError(ValueError):
    """A malformed expected-status file; the message names the entry and field."""


@dataclass(frozen=True)
class Expectation:
    check: str
    reason: str


def load_expected(path: Path) -> dict[str, Expectation]:
    """Read the file into a mapping from check id to expectation; a missing file is empty."""
    if not path.exists():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ExpectedStatusError(f"expected-status file {str(path)!r} is not valid TOML: {error}") from None
    expectations = {}
    for index, entry in enumerate(document.get("expected", [])):
        for field in ("check", "reason"):
            if not isinstance(entry.get(field), str) or not entry[field].strip():
                raise ExpectedStatusError(f"{path}: expected[{index}]: field {field!r} is missing or empty")
        expectations[entry["check"]] = Expectation(entry["check"], entry["reason"])
    return expectations


def write_expected(path: Path, expectations: dict[str, Expectation]) -> None:
    lines = [_HEADER]
    for check in sorted(expectations):
        expectation = expectations[check]
        # JSON strings are valid TOML basic strings, escapes included.
        lines.append(f"[[expected]]\ncheck = {json.dumps(check)}\nreason = {json.dumps(expectation.reason)}\n")
    path.write_text("\n".join(lines), encoding="utf-8")


@dataclass
class Update:
    added: list[str]
    removed: list[str]
    kept: list[str]


def update_expected(path: Path, results: pd.DataFrame, run_id: str, reason: str | None = None) -> Update:
    """Rewrite ``path`` from a run: failing checks are listed, checks that passed are dropped.

    Checks the run did not include keep their entries, so a partial run loses nothing. A
    newly listed check gets ``reason``, or a reason naming the run and its message.
    """
    expectations = load_expected(path)
    update = Update(added=[], removed=[], kept=[])
    for row in results.itertuples():
        listed = row.check in expectations
        if row.status in ("fail", "error", "xfail"):
            if listed:
                update.kept.append(row.check)
                continue
            first_line = (row.message or row.status).splitlines()[0][:200]
            expectations[row.check] = Expectation(row.check, reason or f"failing since run {run_id}: {first_line}")
            update.added.append(row.check)
        elif row.status == "pass" and listed:
            del expectations[row.check]
            update.removed.append(row.check)
    write_expected(path, expectations)
    return update
