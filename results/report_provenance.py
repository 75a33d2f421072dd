"""The report's provenance and per-epoch sections, and its figures as inline SVG.

**Provenance** (per workspace): each sweep's resolved sweep file (every setting with its
default filled in, as the ledger keeps it), the code that ran the stages (git commit, else the
digest of the worker's code), the package versions and the machines (CPU and GPU models) that
the stages' ``provenance.json`` name, and the wall time per stage of each kind (median, max).

**Per-epoch curves** (per workspace and training kind): train loss per epoch and test top-1 (or
the task's own accuracy) where measured, from the stages' ``epochs.jsonl``; one faint line per
stage, a bold mean per series (mask source / init, or the task trained on).

Everything comes in as plain values on :class:`results.report.WorkspaceState` (this package
reads no ledger and no stage folder). Stages made before these files existed have none: the
sections say how many.
"""
from __future__ import annotations

import html
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: at most this many stages' curves drawn faint in one figure (the means use every stage read).
MAX_FAINT = 60
_NUM = ' class="num"'


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int | None = None) -> str:
    def cell(index: int, value: object, tag: str) -> str:
        numeric = numeric_from is not None and index >= numeric_from
        return f"<{tag}{_NUM if numeric else ''}>{_e(value)}</{tag}>"

    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(row)) + "</tr>" for row in rows)
    return ("<table><thead><tr>" + "".join(cell(i, name, "th") for i, name in enumerate(header))
            + f"</tr></thead><tbody>{body}</tbody></table>")


def inline_svg(data: bytes, label: str, prefix: str) -> str:
    """An SVG file's bytes as an ``<svg>`` element of the page: scaled to the page's width (``class="plot"``),
    its ids prefixed with ``prefix`` so that no two figures of a page share one."""
    text = data.decode("utf-8")
    text = text[text.index("<svg"):]
    text = re.sub(r'(\bid="|xlink:href="#|\bhref="#|url\(#)', lambda m: m.group(1) + prefix + "-", text)
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
                  lambda m: f'<svg{m.group(1)} class="plot" role="img" aria-label="{_e(label)}"', text, count=1)


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def provenance_section(states: Sequence[Any]) -> str:
    """The provenance of every workspace (see the module's docstring)."""
    parts = []
    for state in states:
        parts.append(f"<h3>{_e(state.name)}</h3>")
        parts.append(_resolved(state.sweeps))
        records = list(state.provenance)
        told = f"{len(records)} of {state.provenance_total} stage(s) ran" if state.provenance_total else "no stage ran"
        missing = state.provenance_missing
        note = f"; {missing} made before prunesweep recorded it have none" if missing else ""
        parts.append(f"<p>What ran the stages ({_e(told)} with a <code>provenance.json</code>{_e(note)}):</p>")
        if records:
            parts.append(_code(records) + _machines(records) + _packages(records))
        parts.append(_times(state.stage_times))
    return "".join(parts) or "<p>No workspace.</p>"


def _resolved(sweeps: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for sweep in sweeps:
        spec = sweep.get("spec")
        if not spec:
            continue
        import yaml

        text = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=110)
        parts.append(f"<details><summary>resolved sweep file of <b>{_e(sweep.get('name'))}</b> "
                     f"({_e(sweep.get('source'))}, launched {_e(sweep.get('launched'))})</summary>"
                     f"<pre>{_e(text)}</pre></details>")
    return "".join(parts)


def code_label(code: Mapping[str, Any] | None) -> str:
    """``commit 7ba79e8… (modified)`` or ``worker code digest c10e…``."""
    code = code or {}
    if code.get("commit"):
        return f"git commit {code['commit']}" + (" (with local changes)" if code.get("modified") else "")
    return f"worker code sha256 {code.get('digest') or '?'} (not a git checkout)"


def _code(records: list[Mapping[str, Any]]) -> str:
    counts = Counter((code_label(r.get("code")), (r.get("code") or {}).get("digest", "")) for r in records)
    rows = [[label, digest, n] for (label, digest), n in counts.most_common()]
    return "<h4>Code</h4>" + _table(["code", "worker digest", "stages"], rows, numeric_from=2)


def _machines(records: list[Mapping[str, Any]]) -> str:
    counts = Counter((str(r.get("host", "?")), str(r.get("cpu", "?")), str(r.get("cpu_cores", "?")),
                      ", ".join(r.get("gpus") or []) or "none") for r in records)
    rows = [[*machine, n] for machine, n in counts.most_common()]
    return "<h4>Machines</h4>" + _table(["host", "CPU", "cores", "GPUs", "stages"], rows, numeric_from=4)


def _packages(records: list[Mapping[str, Any]]) -> str:
    seen: dict[str, Counter] = {}
    for record in records:
        for name, version in (record.get("packages") or {}).items():
            seen.setdefault(str(name), Counter())[str(version)] += 1
    rows = [[name, "; ".join(f"{version}" + (f" ({n} stages)" if len(versions) > 1 else "")
                             for version, n in versions.most_common())]
            for name, versions in sorted(seen.items(), key=lambda item: item[0].lower())]
    return "<h4>Packages</h4>" + _table(["package", "version"], rows)


def _times(stage_times: Mapping[str, Sequence[float]]) -> str:
    rows = [[kind, len(times), _seconds(statistics.median(times)), _seconds(max(times)), _seconds(sum(times))]
            for kind, times in stage_times.items() if times]
    if not rows:
        return "<p>No stage has finished yet: no stage times.</p>"
    return ("<h4>Stage time per kind</h4><p>Wall time of each done stage's last attempt, from its start to its "
            "end as the ledger recorded them.</p>"
            + _table(["kind", "done stages", "median", "max", "total"], rows, numeric_from=1))


def epoch_curves(states: Sequence[Any]) -> list[dict[str, Any]]:
    """One :mod:`results.epoch_drawing` figure per workspace and training kind with per-epoch metrics."""
    figures = []
    for state in states:
        kinds: dict[str, list[Mapping[str, Any]]] = {}
        for stage in state.epochs:
            kinds.setdefault(str(stage["kind"]), []).append(stage)
        for kind, stages in kinds.items():
            series: dict[str, list[dict[str, list]]] = {}
            for stage in stages:
                entries = stage["entries"]
                series.setdefault(str(stage["series"]), []).append({
                    "epoch": [e["epoch"] for e in entries if "train_loss" in e],
                    "train_loss": [e["train_loss"] for e in entries if "train_loss" in e],
                    "test_epoch": [e["epoch"] for e in entries if _test(e) is not None],
                    "test": [100.0 * value for value in map(_test, entries) if value is not None]})
            total = state.epoch_totals.get(kind, len(stages))
            figures.append({"type": "epochs", "title": f"{state.name}: {kind} stages", "kind": kind,
                            "workspace": state.name, "series": [{"label": label, "stages": runs}
                                                                for label, runs in sorted(series.items())],
                            "max_faint": MAX_FAINT, "stages": len(stages), "total": total})
    return figures


def _test(entry: Mapping[str, Any]) -> float | None:
    value = entry.get("test_top1", entry.get("test_accuracy"))
    return float(value) if isinstance(value, (int, float)) else None


def curves_section(figures: list[dict[str, Any]], images: list[bytes]) -> str:
    """The per-epoch figures with their captions, or why there are none."""
    if not figures:
        return ("<p>No per-epoch metrics: no training stage of these workspaces wrote an <code>epochs.jsonl</code> "
                "(stages made before prunesweep wrote it have none).</p>")
    parts = ["<p>Left: the training loss of each epoch (mean over the epoch's batches). Right: the test top-1 "
             "(or, for a pretext task, its own test accuracy) where the stage measured it: after its last epoch, and "
             "after every N-th epoch of a recipe with <code>eval_every: N</code>. "
             "Faint: single stages; bold: the mean of a series over its stages.</p>", '<div class="figures">']
    for number, (figure, image) in enumerate(zip(figures, images, strict=True)):
        drawn = min(figure["stages"], figure["max_faint"])
        caption = (f"{figure['title']}: {figure['stages']} stage(s) with per-epoch metrics"
                   + (f" of {figure['total']}" if figure["total"] != figure["stages"] else "")
                   + (f"; {drawn} drawn faint" if drawn < figure["stages"] else ""))
        parts.append(f"<figure>{inline_svg(image, figure['title'], f'e{number}')}"
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)
