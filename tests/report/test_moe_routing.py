"""The MoE routing report section: heatmap, load histograms, flip tables."""

from __future__ import annotations

import re

from harness.report import render_report
from harness.report.moe_routing import check_function
from harness.results import Result
from tests.report.test_report import write_run

CASE = "qwen3-moe-tiny"


def routing_result(function, backend, status="pass", **metrics):
    return Result(
        run_id="r",
        suite="moe_routing",
        case=CASE,
        backend=backend,
        check=f"suites/test_moe_routing.py::{function}[{CASE}/{backend}/routing]",
        status=status,
        input="routing",
        metrics=metrics,
    )


def layer_agreement(layer, identical, unexplained=0):
    return {
        "layer": layer,
        "tokens": 256,
        "identical_fraction": identical,
        "mean_jaccard": identical,
        "weights_max_error": 1e-3,
        "logits_max_error": 2e-3,
        "epsilon": 0.01,
        "flips": unexplained,
        "near_tie_flips": 0,
        "downstream_flips": 0,
        "unexplained_flips": unexplained,
    }


def flip(cause, position):
    return {
        "layer": "model.layers.0.mlp.gate",
        "token": position,
        "row": 0,
        "position": position,
        "reference_experts": [1, 4],
        "experts": [1, 6],
        "margin": 0.25 if cause == "unexplained" else 0.001,
        "boundary_margin": 0.25,
        "epsilon": 0.01,
        "cause": cause,
    }


def load(layer, histogram):
    return {
        "layer": layer,
        "histogram": histogram,
        "coefficient_of_variation": 0.5,
        "max_load": max(histogram),
        "min_load": min(histogram),
        "dead_experts": [expert for expert, count in enumerate(histogram) if count == 0],
    }


def test_section_shows_heatmap_histograms_and_flip_tables(tmp_path):
    results = [
        routing_result(
            "test_router_invariants",
            "eager:fp32:eager:eager",
            is_reference=True,
            load=[load("model.layers.0.mlp.gate", [10, 0, 6, 16]), load("model.layers.1.mlp.gate", [8, 8, 8, 8])],
        ),
        routing_result(
            "test_routing_agreement",
            "eager:bf16:eager:eager",
            status="fail",
            layers=[
                layer_agreement("model.layers.0.mlp.gate", 0.99, 1),
                layer_agreement("model.layers.1.mlp.gate", 1.0),
            ],
            flips=[flip("unexplained", 7), flip("near tie", 9)],
        ),
    ]
    write_run(tmp_path, results)

    page = render_report(tmp_path).read_text()

    section = re.sub(r">\s+<", "><", page[page.index('id="moe_routing"') :])
    assert len(re.findall(r'<img src="data:image/png;base64,', section)) == 2
    assert "Unexplained flips (1)" in section
    assert "Explained flips (1)" in section
    assert "layers.0.mlp.gate</td><td>0</td><td>7</td><td>[1, 4]</td><td>[1, 6]</td><td>0.25</td>" in section
    assert "near tie" in section
    assert "layers.0.mlp.gate</td><td>32</td><td>0.5</td><td>16</td><td>0</td><td>1</td>" in section


def test_check_function_is_read_from_the_check_id():
    assert (
        check_function(f"suites/test_moe_routing.py::test_routing_agreement[{CASE}/x/routing]")
        == "test_routing_agreement"
    )
