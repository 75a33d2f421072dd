"""The report page in a real browser: Debian's headless Chromium (installed by tests/cluster/chromium.sh when
missing), 1400 px wide, loads the page `prunesweep report` writes, with no console error and no request for
anything outside the file; its headings are there; each (dataset, network) figure spans the page with a panel
zoomed on the trained masks; every text of every figure is at least 11 px high; every legend entry is a curve
drawn in its colour and style and visible (on top somewhere along it); a real sweep's page shows its provenance
and per-epoch curves. Screenshots are kept (their paths are printed); docs/report-page.png is one of them."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import yaml
from cluster.chromium import keep_screenshot
from conftest import ROOT, TINY
from test_report import record_study

from results.report import SECTIONS

#: the smallest text a reader is asked to read in a figure, in CSS pixels at the page's width of 1400 px
MIN_TEXT_PX = 11

#: per figure: its box, the smallest font size and text box on screen, the panels' titles, and per legend
#: entry whether its curve has the entry's colour and dashes, spans a width, and is on top somewhere along it
FIGURE_CHECKS = """Array.from(document.querySelectorAll('svg.plot')).map(svg => {
    svg.scrollIntoView({block: 'start'});
    const box = svg.getBoundingClientRect();
    const texts = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim());
    const scale = t => { const m = t.getScreenCTM(); return Math.hypot(m.a, m.b); };
    const fonts = texts.map(t => parseFloat(getComputedStyle(t).fontSize) * scale(t));
    const heights = texts.map(t => t.getBBox().height * scale(t));
    const legend = Array.from(svg.querySelectorAll('[id*="legend-text-"]')).map(entry => {
        const i = entry.id.split('legend-text-')[1];
        const handle = svg.querySelector(`[id$="legend-line-${i}"] path`);
        const curves = Array.from(svg.querySelectorAll(`[id$="-curve-${i}-p0"], [id$="-curve-${i}-p1"]`));
        const same = curves.length > 0 && curves.every(g => {
            const a = getComputedStyle(g.querySelector('path')), b = getComputedStyle(handle);
            return a.stroke === b.stroke && a.strokeDasharray === b.strokeDasharray;
        });
        let onTop = false, width = 0;
        for (const g of curves) {
            const path = g.querySelector('path');
            width = Math.max(width, path.getBoundingClientRect().width);
            const length = path.getTotalLength(), ctm = path.getScreenCTM();
            for (let k = 0; k <= 80 && !onTop; k++) {
                const q = path.getPointAtLength(length * k / 80);
                const p = new DOMPoint(q.x, q.y).matrixTransform(ctm);
                const hit = document.elementFromPoint(p.x, p.y);
                onTop = !!(hit && hit.closest(`[id$="-curve-${i}-p0"], [id$="-curve-${i}-p1"]`));
            }
        }
        return {label: entry.textContent.trim(), same, onTop, width};
    });
    return {label: svg.getAttribute('aria-label'), box: [box.left, box.width, box.height],
            font: Math.min(...fonts), height: Math.min(...heights),
            titles: texts.map(t => t.textContent.trim()), legend};
})"""


def report(tmp_path, *workspaces):
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "orchestrator", "report", *map(str, workspaces), "-o", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    return out


def check_figures(browser, expected_labels):
    """The checks of FIGURE_CHECKS on every figure of the open page; returns them."""
    figures = browser.evaluate(FIGURE_CHECKS)
    assert [figure["label"] for figure in figures] == expected_labels
    page_width = browser.evaluate("document.body.clientWidth")
    for figure in figures:
        assert figure["box"][1] >= 0.9 * page_width and figure["box"][2] > 300, figure["box"]  # the page's width
        assert figure["font"] >= MIN_TEXT_PX and figure["height"] >= MIN_TEXT_PX, figure
        assert figure["legend"], figure["label"]
        for entry in figure["legend"]:
            assert entry["same"] and entry["onTop"] and entry["width"] > 50, (figure["label"], entry)
    return figures


def test_the_page_loads_cleanly_with_readable_figures_zoomed_on_the_trained_masks(chromium_browser, tmp_path):
    resnet50, alexnet = tmp_path / "resnet50", tmp_path / "alexnet"
    record_study(resnet50, "resnet50", "fig3-resnet50", rng_seed=1)
    record_study(alexnet, "alexnet", "fig3-alexnet", rng_seed=2)
    out = report(tmp_path, resnet50, alexnet)

    page = chromium_browser.open(out.as_uri())
    assert page.errors == []
    assert page.outside_requests == []
    evaluate = chromium_browser.evaluate
    assert evaluate("document.querySelector('h1').textContent").startswith("prunesweep report")
    assert evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)") == list(SECTIONS.values())
    figures = check_figures(chromium_browser, [f"top-1 vs fraction remaining: imagenet / {arch}"
                                               for arch in ("resnet50", "alexnet")])
    for figure in figures:
        assert "All masks" in figure["titles"] and "Trained masks (random masks left out)" in figure["titles"]
        assert sorted(entry["label"] for entry in figure["legend"]) == sorted(
            [f"{source} / {init}" for source in ("labels", "rotnet") for init in ("winning_ticket", "reinit")]
            + ["random / reinit"])
        assert any("mean ± 1 s.e. over seeds (n = 3 seeds per point)" in title for title in figure["titles"])
    captions = evaluate("Array.from(document.querySelectorAll('#figures figcaption')).map(c => c.textContent)")
    assert all("mean ± 1 s.e. over seeds (n = 3 seeds per point)" in caption for caption in captions)
    assert evaluate("document.querySelectorAll('#pivots table tbody tr').length") == 8  # 4 fractions x 2 networks
    assert evaluate("document.querySelectorAll('#comparisons table').length") == 2  # wt vs reinit, labels vs rotnet

    shot = chromium_browser.screenshot(tmp_path / "report.png")
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert width >= 1000 and height > 1500
    keep_screenshot("the report page", shot)


def test_a_real_sweeps_page_shows_its_provenance_and_per_epoch_curves(chromium_browser, tmp_path):
    """A real tiny sweep, 3 epochs, two seeds: the page of issue 27's screenshot (docs/report-page.png)."""
    recipes = {task: dict(recipe, epochs=3) for task, recipe in TINY["recipes"].items()}
    workspace = tmp_path / "digits"
    sweep = dict(TINY, name="digits-tiny", workspace=str(workspace), mask_source=["labels", "random"],
                 recipes=recipes, seeds=[0, 1])
    (tmp_path / "digits.yaml").write_text(yaml.safe_dump(sweep))
    launch = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(tmp_path / "digits.yaml"),
                             "--no-progress"], capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert launch.returncode == 0, launch.stdout + launch.stderr
    out = report(tmp_path, workspace)

    page = chromium_browser.open(out.as_uri())
    assert page.errors == [] and page.outside_requests == []
    evaluate = chromium_browser.evaluate
    figures = check_figures(chromium_browser, ["top-1 vs fraction remaining: digits / small_cnn(width=4)"]
                            + [f"{workspace}: {kind} stages" for kind in ("dense", "imp", "eval")])
    assert "Trained masks (random masks left out)" in figures[0]["titles"]
    assert [entry["label"] for entry in figures[3]["legend"]] == ["labels / reinit", "random / reinit"]
    provenance = evaluate("document.querySelector('#provenance').innerText")
    for heading in ("Code", "Machines", "Packages", "Stage time per kind"):
        assert f"\n{heading}\n" in provenance
    assert "resolved sweep file of digits-tiny" in provenance
    assert evaluate("document.querySelector('#provenance details pre').textContent").startswith("name: digits-tiny")
    for section in ("provenance", "curves"):
        assert evaluate(f"document.querySelector('#{section}').getBoundingClientRect().height") > 300

    shot = chromium_browser.screenshot(tmp_path / "report-page.png")
    assert struct.unpack(">II", shot.read_bytes()[16:24])[0] >= 1000
    keep_screenshot("a real sweep's report page (docs/report-page.png)", shot)


def test_the_check_sees_console_errors_and_outside_requests(chromium_browser, tmp_path):
    """The same checks on a broken page fail: a console error, an uncaught exception, an image from elsewhere."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><h1>bad</h1><img src='http://127.0.0.1:9/x.png'>"
                   "<script>console.error('broken'); undefinedFunction();</script></body></html>")
    page = chromium_browser.open(bad.as_uri())
    assert any("console.error: broken" in error for error in page.errors), page.errors
    assert any("undefinedFunction" in error for error in page.errors), page.errors
    assert page.outside_requests == ["http://127.0.0.1:9/x.png"]


def test_the_figure_check_sees_small_text_and_a_hidden_curve(chromium_browser, tmp_path):
    """The figure checks fail on a figure drawn the old way: small text and a curve under another one."""
    hidden = """<!DOCTYPE html><html><body style="width: 1300px"><svg class="plot" aria-label="old" viewBox="0 0 600 300"
      style="width: 600px"><g id="f-curve-0-p0"><path d="M 10 100 L 500 100" style="fill: none; stroke: #1f77b4;
      stroke-width: 2"/></g><g id="f-curve-1-p0"><path d="M 10 100 L 500 100" style="fill: none; stroke: #d62728;
      stroke-width: 4"/></g><g id="f-legend-line-0"><path d="M 0 0 L 9 0" style="stroke: #1f77b4"/></g>
      <g id="f-legend-text-0"><text x="10" y="200" style="font-size: 8px">hidden</text></g></svg></body></html>"""
    (tmp_path / "hidden.html").write_text(hidden)
    chromium_browser.open((tmp_path / "hidden.html").as_uri())
    [figure] = chromium_browser.evaluate(FIGURE_CHECKS)
    assert figure["font"] < MIN_TEXT_PX and figure["box"][1] < 0.9 * 1300
    [entry] = figure["legend"]
    assert entry["label"] == "hidden" and entry["same"] and not entry["onTop"] and entry["width"] > 400
