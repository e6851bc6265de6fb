"""Backend discovery through entry points, and selectors over backends, families and variants."""

from __future__ import annotations

import pytest

from harness.backends import UnknownBackendError, _entry_point_backends, load_backends, select_variants
from harness.backends.eager import EagerBackend
from harness.cases import get_case
from harness.listing import backend_rows

PLUGIN_ENTRY_POINTS = """\
[harness.backends]
plugin-eager = tests.plugin_backend:PluginEagerBackend
"""


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """Install a distribution whose only content is a ``harness.backends`` entry point."""
    dist_info = tmp_path / "harness_plugin_example-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-plugin-example\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    _entry_point_backends.cache_clear()
    yield
    _entry_point_backends.cache_clear()


def _ids(pairs):
    return [variant.id for _, variant in pairs]


def test_plugin_backend_found_through_entry_point(installed_plugin):
    from tests.plugin_backend import PluginEagerBackend

    backends = load_backends()

    assert isinstance(backends["plugin-eager"], PluginEagerBackend)
    assert backends["plugin-eager"].family == "plugin"


def test_plugin_backend_listed(installed_plugin):
    rows = {row["backend"]: row for row in backend_rows("cpu")}

    assert rows["plugin-eager"]["available"] == "yes"
    assert rows["plugin-eager"]["default variants"] == "plugin-eager:fp32:sdpa"


def test_plugin_backend_runs_parity(installed_plugin, run_suites):
    run = run_suites("--cases", "llama-tiny", "--backends", "plugin-eager")
    live = run.results[run.results["check"].str.contains("test_parity\\[")]

    assert set(live["backend"]) == {"plugin-eager:fp32:sdpa"}
    assert set(live["status"]) == {"pass"}
    # No tolerance entry names the plugin's family, so eager's fp32 entry judges it.
    assert {thresholds["source"] for thresholds in live["thresholds"]} == {"table eager/fp32"}


def test_built_in_backends_register_through_entry_points():
    names = set(_entry_point_backends())

    assert {"eager", "compiled", "quantized-int8wo", "quantized-bnb-nf4", "quantized-quanto-int4"} <= names


def test_eager_selector_selects_every_eager_variant():
    case = get_case("qwen3-moe-tiny")

    assert _ids(select_variants("eager", case, "cpu")) == [v.id for v in EagerBackend().variants(case, "cpu")]


def test_family_selector_selects_each_quantized_backend():
    case = get_case("llama-tiny")
    quantized = {name for name, backend in load_backends().items() if backend.family == "quantized"}

    chosen = select_variants("quantized", case, "cpu")

    assert {backend.name for backend, _ in chosen} == quantized
    assert "quantized-int8wo:fp32:transformers" in _ids(chosen)
    assert "quantized-int8wo:fp32:direct" not in _ids(chosen)
    assert "quantized-int8wo:bf16:transformers" not in _ids(chosen)
    assert "quantized-fp8:bf16:transformers" in _ids(chosen)


def test_family_selector_with_path_reaches_direct_variants():
    chosen = _ids(select_variants("quantized-int8wo:fp32:direct", get_case("llama-tiny"), "cpu"))

    assert chosen == ["quantized-int8wo:fp32:direct"]


def test_family_selector_with_dtype_reaches_other_variants():
    chosen = _ids(select_variants("quantized:bf16", get_case("llama-tiny"), "cpu"))

    assert "quantized-int8wo:bf16:transformers" in chosen
    assert all(":bf16:" in variant_id for variant_id in chosen)


def test_compiled_selector_picks_fp32_default_mode_on_cpu():
    chosen = _ids(select_variants("compiled", get_case("llama-tiny"), "cpu"))

    assert chosen == ["compiled:fp32:default"]


def test_compiled_selector_with_dtype_picks_every_mode():
    chosen = _ids(select_variants("compiled:bf16", get_case("llama-tiny"), "cpu"))

    assert chosen == ["compiled:bf16:default", "compiled:bf16:reduce-overhead", "compiled:bf16:max-autotune"]


def test_compiled_selector_names_one_mode():
    chosen = _ids(select_variants("compiled:fp32:max-autotune", get_case("llama-tiny"), "cpu"))

    assert chosen == ["compiled:fp32:max-autotune"]


def test_combined_selector_keeps_selector_order():
    chosen = select_variants("eager:fp32,compiled:fp32,quantized", get_case("llama-tiny"), "cpu")
    families = [backend.family for backend, _ in chosen]

    assert families == sorted(families, key=["eager", "compiled", "quantized"].index)


def test_unknown_backend_suggests_family():
    with pytest.raises(UnknownBackendError, match="unknown backend 'quantised'; closest: quantized"):
        select_variants("quantised", get_case("llama-tiny"), "cpu")
