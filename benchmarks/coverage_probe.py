"""Count the model types whose automatic case builds and runs a forward in fp32, bf16 and fp16.

Usage: python benchmarks/coverage_probe.py OUTPUT.jsonl [model_type ...]

A lighter stand-in for `harness run --cases all-tiny`: for each model type (all of them by
default) it builds the automatic case, synthesizes its inputs, and runs one forward per
dtype through from_pretrained, in two processes with one torch thread each. It writes one
JSON line per type (its category when it did not build, else the outcome per dtype) and
prints the counts. Each type has 180 s.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import signal
import sys
import time

_DTYPES = ("fp32", "bf16", "fp16")
_SECONDS_PER_TYPE = 180


def probe(model_type: str) -> dict:
    import torch

    from harness.cases.automatic import NotCovered, automatic_case
    from harness.cases.build import build_case, load_model
    from harness.inputs import PLAIN, build_inputs
    from harness.probes.compare import primary_output

    torch.set_num_threads(1)
    signal.alarm(_SECONDS_PER_TYPE)
    started = time.perf_counter()
    row: dict = {"type": model_type}
    try:
        case = automatic_case(model_type)
        built = build_case(case)
        inputs = build_inputs(case.inputs, built.config, PLAIN)
        row["inputs"] = inputs.notes.get("input_groups")
        for name in _DTYPES:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
            try:
                model = load_model(built, dtype, attn_implementation="eager")
                with torch.inference_mode():
                    output = primary_output(model(**inputs.to("cpu", dtype)))
                row[name] = "ran" if torch.isfinite(output.float()).all() else "ran, non-finite"
            except Exception as error:  # noqa: BLE001 - recorded per dtype
                row[name] = f"error: {type(error).__name__}: {' '.join(str(error).split())[:200]}"
    except NotCovered as not_covered:
        row["category"] = not_covered.category
        row["detail"] = not_covered.detail
    except Exception as error:  # noqa: BLE001 - recorded for the type
        row["category"] = "error"
        row["detail"] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    finally:
        signal.alarm(0)
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def main(arguments: list[str]) -> int:
    if not arguments:
        print(__doc__)
        return 2
    os.environ["OMP_NUM_THREADS"] = "1"
    from transformers.models.auto import modeling_auto

    output, types = arguments[0], arguments[1:] or list(modeling_auto.MODEL_MAPPING_NAMES)
    started = time.perf_counter()
    rows = []
    context = multiprocessing.get_context("fork")
    with open(output, "w", encoding="utf-8") as handle, context.Pool(2, maxtasksperchild=25) as pool:
        for row in pool.imap_unordered(probe, types):
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            rows.append(row)

    print(f"model types: {len(rows)}; wall time {(time.perf_counter() - started) / 60:.1f} min")
    print(f"not built: {dict(collections.Counter(row['category'] for row in rows if 'category' in row))}")
    for name in _DTYPES:
        ran = sum(1 for row in rows if str(row.get(name, "")).startswith("ran"))
        print(f"{name}: {ran} ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
