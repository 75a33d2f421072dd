"""The report page in a real browser: Debian's headless Chromium (installed by tests/cluster/chromium.sh when
missing) loads the page `prunesweep report` writes for two networks' workspaces, with no console error and no
request for anything outside the file; its headings are there, its two figures have a size and stand side by
side; a screenshot is kept (its path is printed)."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

from cluster.chromium import keep_screenshot
from conftest import ROOT
from test_report import record_study

from results.report import SECTIONS


def test_the_page_loads_cleanly_with_its_figures_side_by_side(chromium_browser, tmp_path):
    resnet50, alexnet = tmp_path / "resnet50", tmp_path / "alexnet"
    record_study(resnet50, "resnet50", "fig3-resnet50", rng_seed=1)
    record_study(alexnet, "alexnet", "fig3-alexnet", rng_seed=2)
    out = tmp_path / "fig3.html"
    done = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(resnet50), str(alexnet), "-o", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr

    page = chromium_browser.open(out.as_uri())
    assert page.errors == []
    assert page.outside_requests == []
    evaluate = chromium_browser.evaluate
    assert evaluate("document.querySelector('h1').textContent").startswith("prunesweep report")
    assert evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)") == list(SECTIONS.values())
    figures = evaluate("""Array.from(document.querySelectorAll('figure img')).map(img => {
        const box = img.getBoundingClientRect();
        return {natural: [img.naturalWidth, img.naturalHeight], box: [box.left, box.top, box.width, box.height],
                caption: img.parentElement.querySelector('figcaption').textContent};
    })""")
    assert [figure["caption"].split(" (")[0] for figure in figures] == ["imagenet / resnet50", "imagenet / alexnet"]
    for figure in figures:
        assert min(figure["natural"]) > 300 and min(figure["box"][2:]) > 200, figure
    (left, top, width, _), (right_left, right_top, _, _) = (figure["box"] for figure in figures)
    assert right_top == top and right_left >= left + width  # side by side, as the paper's Fig. 3
    assert evaluate("document.querySelectorAll('#pivots table tbody tr').length") == 8  # 4 fractions x 2 networks
    assert evaluate("document.querySelectorAll('#comparisons table').length") == 2  # wt vs reinit, labels vs rotnet

    shot = chromium_browser.screenshot(tmp_path / "report.png")
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert width >= 1000 and height > 1500
    keep_screenshot("the report page", shot)


def test_the_check_sees_console_errors_and_outside_requests(chromium_browser, tmp_path):
    """The same checks on a broken page fail: a console error, an uncaught exception, an image from elsewhere."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><h1>bad</h1><img src='http://127.0.0.1:9/x.png'>"
                   "<script>console.error('broken'); undefinedFunction();</script></body></html>")
    page = chromium_browser.open(bad.as_uri())
    assert any("console.error: broken" in error for error in page.errors), page.errors
    assert any("undefinedFunction" in error for error in page.errors), page.errors
    assert page.outside_requests == ["http://127.0.0.1:9/x.png"]
