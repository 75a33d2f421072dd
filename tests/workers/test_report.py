"""The report page (`prunesweep report`, results/report.py): its sections and numbers on rows recorded
through the real results table, its refusals, and the end-to-end case of the issue: two real sweeps of two
networks, one `report` call, one figure per network side by side. The page in a real browser:
tests/integration/test_report_browser.py."""
from __future__ import annotations

import html
import os
import random
import statistics
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, ledger_states, results_row

import results
from orchestrator.state.ledger import Ledger
from results.report import SECTIONS, FailedStage, WorkspaceState, build_report
from results.report_html import MAX_ROWS
from results.report_results import MAX_CURVES

#: a figure of the page: an inline SVG (scaled to the page's width by its class) and its viewBox in points
FIGURE = re.compile(r'<svg [^>]*class="plot"[^>]*>')


def cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)


def figure_sizes(page: str) -> list[tuple[float, float]]:
    """Width and height, in points, of every top-1 figure of a page."""
    tags = [tag for tag in FIGURE.findall(page) if 'aria-label="top-1 vs fraction remaining: ' in tag]
    return [tuple(map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', tag).groups())) for tag in tags]


def record_study(workspace: Path, arch: str, sweep: str, seeds=range(3), rng_seed=0) -> int:
    """A workspace (real ledger, no stage) whose table holds the paper's grid on one network: labels, rotnet and
    random masks, winning tickets and re-initialisations, four fractions, ``seeds``; and rotnet transfer rows."""
    workspace.mkdir(parents=True)
    Ledger(workspace).close()
    rng = random.Random(rng_seed)
    rows = []
    for mask_source in ("labels", "rotnet", "random"):
        for init in ("reinit",) if mask_source == "random" else ("winning_ticket", "reinit"):
            for level, fraction in enumerate((0.8, 0.512, 0.21, 0.055), start=1):
                for seed in seeds:
                    drop = (0.35 if mask_source == "random" else 0.05) * (1 - fraction)
                    rows.append(results_row(sweep=sweep, dataset="imagenet", arch=arch, mask_source=mask_source,
                                            init=init, rewind="-" if mask_source == "random" else "0", level=level,
                                            nominal_fraction=fraction, measured_fraction=fraction * 0.999,
                                            seed=seed, top1=0.7 - drop + rng.gauss(0, 0.01)))
    for transfer in ("linear", "finetune"):
        for seed in seeds:
            row = results_row(sweep=sweep, dataset="imagenet", arch=arch, mask_source="rotnet", init="pretrained",
                              transfer=transfer, eval_dataset="voc07", metric="map", level=3, nominal_fraction=0.21,
                              measured_fraction=0.21, seed=seed, top1=0.5 + 0.1 * rng.random())
            row["stage_key"] += f"|{transfer}"
            rows.append(row)
    assert results.record(workspace, rows) == len(rows)
    return len(rows)


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory):
    """Two workspaces, ResNet-50 and AlexNet, with rows recorded directly (nothing trained)."""
    base = tmp_path_factory.mktemp("report")
    record_study(base / "resnet50", "resnet50", "fig3-resnet50", rng_seed=1)
    record_study(base / "alexnet", "alexnet", "fig3-alexnet", rng_seed=2)
    return base / "resnet50", base / "alexnet"


def test_one_call_gives_every_section_and_a_figure_per_network(two_networks, tmp_path):
    out = tmp_path / "report.html"
    done = cli("report", *two_networks, "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}: {2 * 66:,} rows from 2 workspaces\n"
    page = out.read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == list(SECTIONS.values())
    sizes = figure_sizes(page)
    assert len(sizes) == 2 and all(width > 900 and height > 350 for width, height in sizes)  # two panels each
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)[:2]
    assert [caption.split(" (")[0] for caption in captions] == ["imagenet / resnet50", "imagenet / alexnet"]
    assert "resnet50: fig3-resnet50" in captions[0] and str(two_networks[0]) not in captions[0]  # its label
    # self-contained: nothing is fetched, no script runs
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:|#)', page)
    assert "default-src 'none'" in page


def test_tables_hold_the_numbers_of_results(two_networks, tmp_path):
    out = tmp_path / "report.html"
    assert cli("report", *two_networks, "-o", out).returncode == 0
    page = out.read_text()
    frame = results.load(list(two_networks))
    grid = frame[frame["transfer"].isna()]
    for arch in ("resnet50", "alexnet"):
        pivot = results.pivot(grid[grid["arch"] == arch])
        for fraction, row in pivot.iterrows():
            cells = "".join(f'<td class="num">{value}</td>' for value in row)
            assert f"<tr><td>{fraction}</td>{cells}</tr>" in page
    # the default comparisons: winning ticket vs reinit, labels vs each other trained mask; never random
    # the winning ticket's claim has a direction (one-sided); labels vs another mask source does not
    assert re.findall(r"<h3>(\w+): (\w+) (vs|&gt;) (\w+)</h3>", page) == [
        ("init", "winning_ticket", "&gt;", "reinit"), ("mask_source", "labels", "vs", "rotnet")]
    assert "paired t-test, one-sided (A &gt; B); p (Holm): adjusted over the" in page
    compared = results.compare(frame, "mask_source", "labels", "rotnet")
    assert len(compared) == 16 and compared["n"].eq(3).all()
    first = compared.iloc[0]
    assert f'<td class="num">{100 * first["diff"]:+.2f}</td><td class="num">{100 * first["diff_se"]:.2f}</td>' in page
    # the transfer tables: mAP on VOC07, per network
    assert "<h3>imagenet / resnet50 → voc07 (mAP)</h3>" in page and "<h3>imagenet / alexnet → voc07 (mAP)</h3>" in page
    assert "rotnet / linear" in page and "rotnet / finetune" in page


def test_a_chosen_comparison_and_filters(two_networks, tmp_path):
    out = tmp_path / "report.html"
    done = cli("report", *two_networks, "-o", out, "--compare", "mask_source=rotnet,random", "--where",
               "nominal_fraction<0.3", "--title", "Fig. 3 <both>")
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "<title>Fig. 3 &lt;both&gt;</title>" in page and "<h1>Fig. 3 &lt;both&gt;</h1>" in page
    assert re.findall(r"<h3>(\w+): (\w+) vs (\w+)</h3>", page) == [("mask_source", "rotnet", "random")]
    assert "rows where nominal_fraction&lt;0.3" in page and "80.0%" not in page


def test_many_curves_are_pooled_with_a_note(tmp_path):
    rows = [results_row(sweep=f"s{sweep}", mask_source=source, init=init, seed=seed, nominal_fraction=fraction,
                        measured_fraction=fraction, top1=0.5 + 0.01 * seed)
            for sweep in range(MAX_CURVES) for source in ("labels", "rotnet") for init in ("winning_ticket", "reinit")
            for seed in (0, 1) for fraction in (0.8, 0.512)]
    results.record(tmp_path, rows)
    page = build_report(results.load(tmp_path), [WorkspaceState(str(tmp_path))])
    assert f"{4 * MAX_CURVES} curves: pooled over {MAX_CURVES} sweep(s) in 1 workspace(s)" in page
    pivot_header = re.search(r'<section id="pivots">.*?<thead>(.*?)</thead>', page).group(1)
    assert re.findall(r"<th[^>]*>(.*?)</th>", pivot_header) == [
        "fraction remaining", "labels / reinit", "labels / winning_ticket", "rotnet / reinit",
        "rotnet / winning_ticket"]
    assert '<td class="num">50.5 ± 0.5 (2)</td>' in page  # 12 sweeps x 2 seeds in one cell: 2 seeds, none twice


def test_ledger_sections_failures_and_missing_cells_escaped(tmp_path):
    results.record(tmp_path, [results_row(sweep="<b>bold</b>")])
    missing = [dict(sweep="s", mask_source="labels", init="reinit", transfer=None, rewind="0", nominal_fraction=0.2,
                    seed=seed, stage_key=f"eval-{seed:04d}", state="planned") for seed in range(MAX_ROWS + 5)]
    state = WorkspaceState(
        "ws", sweeps=[{"name": "s", "source": "s.yaml", "launched": "2026-12-01T00:00:00+00:00"}],
        stage_counts={"dense": {"done": 1}, "eval": {"done": 2, "failed": 1, "planned": MAX_ROWS + 5}},
        failures=[FailedStage("eval-abc", "eval labels/reinit 20%", "RuntimeError", "boom <here>", attempts=2,
                          where="local on host", logs=[("ws/stages/eval-abc/log.txt", "line 1\nlast line")])],
        missing=missing, cells=MAX_ROWS + 8)
    page = build_report(results.load(tmp_path), [state])
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "<h4>eval-abc <span class=\"label\">eval labels/reinit 20%</span></h4>" in page
    assert "<p>RuntimeError, attempt 2, local on host</p><pre>boom &lt;here&gt;</pre>" in page
    assert "last lines of ws/stages/eval-abc/log.txt:</p><pre>line 1\nlast line</pre>" in page
    assert f"3 of {MAX_ROWS + 8} cells done, {MAX_ROWS + 5} missing" in page
    assert page.count("<td>eval-0") == MAX_ROWS and "… and 5 more" in page
    states = re.search(r'<section id="stages">(.*?)</section>', page).group(1)
    total = '<tr class="total"><td>all</td><td class="num">205</td><td class="num">0</td><td class="num">3</td>'
    assert total in states


def test_an_empty_workspace_gives_a_page_that_says_so(tmp_path):
    workspace = tmp_path / "empty"
    workspace.mkdir()
    Ledger(workspace).close()
    done = cli("report", workspace, "-o", tmp_path / "r.html")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r.html").read_text()
    assert "No results on the pruning grid yet." in page and "No transfer evaluation" in page
    assert "No comparison" in page and not figure_sizes(page) and "<svg" not in page


@pytest.mark.parametrize("target,needle", [
    ("folder", "is a folder; an export writes a regular file"),
    ("link.html", "is a symbolic link"),
    ("nowhere/r.html", "does not exist; create it first"),
    ("ws/ledger.sqlite", "part of the workspace"),
    ("ws/stages/x.html", "part of the workspace"),
    ("r.png", "a report is an HTML file; its name ends in .html or .htm"),
])
def test_bad_targets_are_refused_and_nothing_is_written(tmp_path, target, needle):
    workspace = tmp_path / "ws"
    record_study(workspace, "alexnet", "s", seeds=[0])
    (workspace / "stages").mkdir()
    (tmp_path / "folder").mkdir()
    (tmp_path / "elsewhere.html").write_text("keep")
    (tmp_path / "link.html").symlink_to(tmp_path / "elsewhere.html")
    before = {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")}
    done = cli("report", workspace, "-o", tmp_path / target)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and needle in done.stderr and done.stderr.startswith("prunesweep: error: -o: ")
    assert {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")} == before


@pytest.mark.parametrize("args,needle", [
    (["--where", "colour=red"], "--where: filter 'colour=red': unknown column 'colour'"),
    (["--compare", "mask_source=labels"], "--compare: 'mask_source=labels': expected exactly two values"),
    (["--compare", "colour=a,b"], "--compare: unknown column 'colour'"),
    (["--compare", "mask_source=labels,exemplar"], "--compare: mask_source=exemplar: no row has this value"),
])
def test_bad_options_exit_2_with_one_line(two_networks, tmp_path, args, needle):
    out = tmp_path / "r.html"
    done = cli("report", *two_networks, "-o", out, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and needle in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_plan_launch_and_status_never_load_the_report():
    code = ("import sys, orchestrator.cli, orchestrator.driver, orchestrator.commands.status, orchestrator.planning.planner; "
            "print(sorted(m for m in sys.modules if m.endswith(('report', 'report_command')) "
            "and not m.startswith('coverage.')))")  # coverage's own reporters, loaded under pytest's --cov
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def two_real_sweeps(tmp_path_factory):
    """The tiny grid (labels and random masks, 1 epoch) launched on two networks, one workspace each; then one
    evaluation of the second made a failure with a log, as a stage that raised leaves it."""
    base = tmp_path_factory.mktemp("report-e2e")
    recipes = {task: dict(recipe, epochs=1) for task, recipe in TINY["recipes"].items()}
    workspaces = []
    for width in (4, 8):
        workspace = base / f"width{width}"
        sweep = dict(TINY, name=f"tiny-w{width}", workspace=str(workspace), mask_source=["labels", "random"],
                     recipes=recipes, arch={"name": "small_cnn", "width": width})
        path = base / f"tiny-w{width}.yaml"
        path.write_text(yaml.safe_dump(sweep))
        launch = cli("launch", path, "--no-progress")
        assert launch.returncode == 0, launch.stdout + launch.stderr
        workspaces.append(workspace)
    ledger = Ledger(workspaces[1])
    try:
        failed = next(row for row in ledger.stages() if row["kind"] == "eval")
        folder = workspaces[1] / "stages" / failed["key"]
        (folder / "DONE.json").unlink()
        (folder / "log.txt").write_text("".join(f"step {i}\n" for i in range(30)) + "RuntimeError: out of luck\n")
        ledger.mark_failed(failed["key"], "RuntimeError", "the stage raised")
    finally:
        ledger.close()
    return workspaces, failed["key"]


def test_one_report_over_two_networks_end_to_end(two_real_sweeps, tmp_path):
    (first, second), failed = two_real_sweeps
    out = tmp_path / "fig3.html"
    done = cli("report", first, second, "-o", out)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    captions = [caption.split(" (")[0] for caption in re.findall(r"<figcaption>(.*?)</figcaption>", page)][:2]
    assert captions == ["digits / small_cnn(width=4)", "digits / small_cnn(width=8)"]
    assert len(figure_sizes(page)) == 2
    for workspace, name in ((first, "tiny-w4"), (second, "tiny-w8")):
        assert f"<tr><td>{workspace}</td><td>{name}</td>" in page
    # the stage states: one table per workspace, the failure with its log's last lines, the cell it leaves missing
    stages = re.search(r'<section id="stages">(.*?)</section>', page).group(1)
    assert stages.count("<th>kind</th>") == 2
    assert f"<h3>{second}: 1 failed stage(s)</h3>" in page and f"<h4>{failed} " in page
    assert "RuntimeError, attempt" in page and "step 29\nRuntimeError: out of luck</pre>" in page
    assert "step 17\n" not in page  # a tail, not the whole log
    missing = re.search(r'<section id="missing">(.*?)</section>', page).group(1)
    assert f"<td>{failed}</td><td>failed</td>" in missing and f"{first}: 6 of 6 cells done, 0 missing" in missing
    assert "<h3>init: winning_ticket &gt; reinit</h3>" in page


def test_voc07_rows_of_either_average_precision_get_tables_of_their_own(tmp_path):
    """Rows whose top1 holds VOC07's 11-point mAP (recorded before issue 28) are never shown as the
    benchmark's mAP: a table of each, named for its metric."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    Ledger(workspace).close()
    rows = [results_row(dataset="imagenet", mask_source="rotnet", init="pretrained", transfer="linear",
                        eval_dataset="voc07", metric=metric, level=3, nominal_fraction=0.21, seed=seed, top1=top1)
            for seed, (metric, top1) in enumerate((("map", 0.61), ("map_11point", 0.58)))]
    assert results.record(workspace, rows) == 2
    out = tmp_path / "report.html"
    assert cli("report", workspace, "-o", out).returncode == 0
    page = out.read_text()
    assert "<h3>imagenet / lenet → voc07 (mAP)</h3>" in page and "<h3>imagenet / lenet → voc07 (11-point mAP)</h3>" in page


def test_the_provenance_and_per_epoch_curves_of_real_stages(two_real_sweeps, tmp_path):
    """Issue 27: the resolved sweep file, the code, packages and machines that ran the stages, the stage time per
    kind and the per-epoch curves, all from what the real stages wrote."""
    from importlib import metadata

    from workers.stages.provenance import cpu_model, read_provenance

    (first, second), _ = two_real_sweeps
    out = tmp_path / "r.html"
    assert cli("report", first, second, "-o", out).returncode == 0
    page = out.read_text()
    provenance = re.search(r'<section id="provenance">(.*?)</section>', page, re.S).group(1)
    assert provenance.count("<details><summary>resolved sweep file of") == 2 and "recipes:" in provenance
    record = read_provenance(next((first / "stages").glob("eval-*")))
    code = record["code"]
    assert (f"git commit {code['commit']}" if code["commit"] else f"sha256 {code['digest']}") in provenance
    assert f"<td>torch</td><td>{metadata.version('torch')}</td>" in provenance
    assert f"<td>{html.escape(cpu_model())}</td>" in provenance
    ledger = Ledger(first, reading=True)
    try:
        evals = [row["ended_at"] - row["started_at"] for row in ledger.stages() if row["kind"] == "eval"]
    finally:
        ledger.close()
    times = re.search(r"<h4>Stage time per kind</h4>.*?</table>", provenance, re.S).group(0)
    assert (f'<tr><td>eval</td><td class="num">{len(evals)}</td><td class="num">{statistics.median(evals):.1f} s</td>'
            f'<td class="num">{max(evals):.1f} s</td>') in times
    curves = re.search(r'<section id="curves">(.*?)</section>', page, re.S).group(1)
    labels = re.findall(r'<svg [^>]*aria-label="([^"]*)"', curves)
    assert labels == [f"{workspace}: {kind} stages" for workspace in (first, second) for kind in ("dense", "imp", "eval")]
    evaluations = sum(row["kind"] == "eval" and row["state"] == "done" for row in ledger_states(first).values())
    assert f"{first}: eval stages: {evaluations} stage(s) with per-epoch metrics" in curves
    assert "labels / reinit" in curves and "random / reinit" in curves  # the eval series: their cells


def test_stage_times_are_the_median_and_max_of_each_kind(tmp_path):
    results.record(tmp_path, [results_row()])
    times = {"dense": [40.0, 50.0], "eval": [1.0, 3.0, 10.0, 600.0]}
    page = build_report(results.load(tmp_path), [WorkspaceState("ws", stage_times=times)])
    for kind, seconds in times.items():
        median, longest = statistics.median(seconds), max(seconds)
        shown = [f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min" for value in (median, longest)]
        assert (f'<tr><td>{kind}</td><td class="num">{len(seconds)}</td><td class="num">{shown[0]}</td>'
                f'<td class="num">{shown[1]}</td>') in page


def test_an_old_workspace_opens_unchanged_and_reports_the_same_rows(tmp_path):
    """The workspace of an earlier version (tests/fixtures/workspace_v1): no provenance.json, no epochs.jsonl; the
    page says so, its tables hold the rows `results` reads, and no stage folder changes."""
    import shutil

    workspace = tmp_path / "workspace_v1"
    shutil.copytree(ROOT / "tests" / "fixtures" / "workspace_v1", workspace)
    before = {path: path.read_bytes() for path in (workspace / "stages").rglob("*") if path.is_file()}
    out = tmp_path / "old.html"
    done = cli("report", workspace, "-o", out)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert {path: path.read_bytes() for path in (workspace / "stages").rglob("*") if path.is_file()} == before
    frame = results.load(workspace)
    assert done.stdout == f"wrote {out}: {len(frame):,} rows from 1 workspace\n"
    grid = frame[frame["transfer"].isna()]
    for fraction, row in results.pivot(grid).iterrows():
        assert f"<tr><td>{fraction}</td>" + "".join(f'<td class="num">{value}</td>' for value in row) in page
    stages = len(ledger_states(workspace))
    assert f"0 of {stages} stage(s) ran with a <code>provenance.json</code>; {stages} made before" in page
    assert "No per-epoch metrics" in page
