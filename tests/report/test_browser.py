"""The report in a real browser: headless Chromium loads it offline, with no console message.

Skipped where Chromium is not installed (.ci/run installs Debian's chromium package). The
screenshot is kept under reports/test-artifacts/ (or $HARNESS_TEST_ARTIFACTS) for a look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from harness.report import render_report
from harness.results import Result, ResultsWriter, write_run_info
from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed; apt-get install chromium")

# The flags a sandboxed, offline machine needs: no background networking, no first-run work.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("HARNESS_TEST_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    writer = ResultsWriter(run_dir / "results.jsonl")
    for index, (dtype, status) in enumerate([("fp32", "pass"), ("bf16", "pass"), ("fp16", "fail")]):
        writer.write(
            Result(
                run_id="browser",
                suite="parity",
                case="llama-tiny",
                backend=f"eager:{dtype}:sdpa",
                check=f"suites/test_parity.py::test_parity[llama-tiny/eager:{dtype}:sdpa/plain-{index}]",
                status=status,
                input="plain",
                metrics={"dtype": dtype, "max_abs_error": 10.0 ** -(index + 2), "reference_max_abs": 1.0},
                thresholds={"atol": 1e-3, "rtol": 1e-2, "source": "table eager/" + dtype},
                margin=0.5 - index * 0.4,
                message="<script>console.error('injected')</script>" if status == "fail" else "",
            )
        )
    writer.close()
    write_run_info(run_dir, {"run_id": "browser", "environment": {"device": "cpu", "versions": {"torch": "x"}}})
    return render_report(run_dir, baseline=None)


def chromium(*arguments: str, user_data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={user_data}", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_loads_offline_without_console_messages(report, tmp_path):
    completed = chromium("--dump-dom", report.as_uri(), user_data=tmp_path / "profile")

    assert completed.returncode == 0, completed.stderr[-2000:]
    console = [line for line in completed.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    dom = completed.stdout
    assert dom.count("<table") >= 3
    assert '<img src="data:image/png;base64,' in dom
    assert "&lt;script&gt;console.error" in dom


def test_report_screenshot_shows_content(report, tmp_path):
    screenshot = artifacts_dir() / "report.png"
    screenshot.unlink(missing_ok=True)
    completed = chromium(
        f"--screenshot={screenshot}", "--window-size=1400,1600", report.as_uri(), user_data=tmp_path / "profile"
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1400, 1600)
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10, "the screenshot is nearly uniform: the page did not render"
