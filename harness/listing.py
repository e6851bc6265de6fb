"""Rows for ``harness list``: cases, backends, suites."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from harness.backends import load_backends
from harness.cases import Case, curated_cases, load_case_file
from harness.cases.build import parameter_count
from harness.environment import resolve_device

# A dense decoder and an MoE decoder, to show which variants a backend offers for each.
_EXAMPLE_DENSE = "llama-tiny"
_EXAMPLE_MOE = "qwen3-moe-tiny"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Format rows as an aligned plain-text table."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    widths = {column: max(len(column), *(len(str(row[column])) for row in rows)) for column in columns}
    lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
    lines += ["  ".join(str(row[column]).ljust(widths[column]) for column in columns) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def case_rows(device: str, case_files: list[str]) -> list[dict[str, Any]]:
    cases: list[Case] = list(curated_cases())
    for path in case_files:
        cases += load_case_file(path)
    device = resolve_device(device)
    rows = []
    for case in cases:
        count = parameter_count(case)
        rows.append(
            {
                "id": case.id,
                "model_type": case.model_type,
                "auto_class": case.auto_class,
                "parameters": f"{count:,}" if count is not None else "?",
                "tags": ",".join(sorted(case.tags)),
                "source": case.source,
                "runs": "yes" if device in case.devices else f"no ({'/'.join(sorted(case.devices))} only)",
                "opt_in": "yes" if case.opt_in else "",
            }
        )
    return rows


def backend_rows(device: str) -> list[dict[str, Any]]:
    device = resolve_device(device)
    by_id = {case.id: case for case in curated_cases()}
    rows = []
    for name, backend in sorted(load_backends().items()):
        reason = backend.unavailable_reason(device)
        dense = backend.variants(by_id[_EXAMPLE_DENSE], device)
        moe = backend.variants(by_id[_EXAMPLE_MOE], device)
        defaults = set(backend.default_variants(by_id[_EXAMPLE_DENSE], device))
        others = " ".join(variant.id for variant in dense if variant not in defaults)
        if not dense and moe:
            others = " ".join(variant.id for variant in moe) + " (MoE cases only)"
        elif len(moe) > len(dense):
            others += f" (+{len(moe) - len(dense)} variants for MoE cases)"
        rows.append(
            {
                "backend": name,
                "family": backend.family,
                "available": "yes" if reason is None else f"no: {reason}",
                # What a selector naming only the backend (or its family) runs.
                "default variants": " ".join(variant.id for variant in dense if variant in defaults) or "-",
                "other variants": others.strip() or "-",
            }
        )
    return rows


def suite_rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for module in sorted(folder.glob("test_*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        docstring = (ast.get_docstring(tree) or "").strip().splitlines()
        name = module.stem.removeprefix("test_")
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SUITE" for t in node.targets):
                name = ast.literal_eval(node.value)
        rows.append({"suite": name, "module": module.name, "about": docstring[0] if docstring else ""})
    return rows
