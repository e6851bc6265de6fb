"""The compile section: compile time, graph capture and recompiles per case and compiled variant."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.sections import Section, Table, format_number, register_section

_NEW_LENGTH = "test_compiled_new_length["
_GENERATION = "test_compiled_generation["


def _metric(row: pd.Series, name: str) -> Any:
    return (row.get("metrics") or {}).get(name)


@register_section("compile")
def render_compile(results: pd.DataFrame, context: dict[str, Any]) -> Section | None:
    frame = results[results["suite"] == "compile"]
    if frame.empty:
        return None
    section = Section(
        title="Compile",
        anchor="compile",
        summary=(
            "torch.compile (inductor) once per case and variant. 'compile s' is the first forward, compile "
            "included; inductor's on-disk cache makes later runs faster ('cache hits'). 'recompiles' counts the "
            "graphs a second sequence length compiled, and the output at that length is judged against the "
            "live reference. Generation runs greedily through Transformers' compiled decode step with a static "
            "cache; each step's logits are judged against the reference's logits for the same tokens."
        ),
    )
    new_length = frame[frame["check"].str.contains(_NEW_LENGTH, regex=False)]
    rows = [
        [
            row["case"],
            row["backend"],
            row["status"],
            format_number(_metric(row, "compile_s")),
            format_number(_metric(row, "fullgraph")),
            format_number(_metric(row, "graph_breaks")),
            format_number(_metric(row, "inductor_cache_hits")),
            format_number(_metric(row, "recompiles_new_length")),
            format_number(_metric(row, "recompile_s")),
            format_number(_metric(row, "cosine"), digits=7),
            format_number(row.get("margin")),
            row["message"],
        ]
        for _, row in new_length.iterrows()
    ]
    columns = [
        "case",
        "backend",
        "status",
        "compile s",
        "fullgraph",
        "graph breaks",
        "cache hits",
        "recompiles",
        "recompile s",
        "cosine",
        "margin",
        "message",
    ]
    if rows:
        section.tables.append(Table(columns, rows, caption="Compile and a second sequence length"))

    generation = frame[frame["check"].str.contains(_GENERATION, regex=False)]
    rows = [
        [
            row["case"],
            row["backend"],
            row["status"],
            format_number(_metric(row, "generate_s")),
            format_number(_metric(row, "decode_graphs")),
            format_number(_metric(row, "decode_graph_breaks")),
            format_number(_metric(row, "max_abs_error")),
            format_number(_metric(row, "top1_agreement")),
            format_number(_metric(row, "token_agreement")),
            format_number(row.get("margin")),
            row["message"],
        ]
        for _, row in generation.iterrows()
    ]
    columns = [
        "case",
        "backend",
        "status",
        "generate s",
        "decode graphs",
        "graph breaks",
        "max abs error",
        "top-1",
        "tokens as reference",
        "margin",
        "message",
    ]
    if rows:
        section.tables.append(Table(columns, rows, caption="Compiled generation with a static cache"))
    return section
