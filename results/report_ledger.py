"""The sections of the report page that say what the ledgers say: the sweeps launched, the stage
states per kind, the failures with their log tails and the missing cells.

Each takes the :class:`results.report.WorkspaceState` values of the page (typed ``Any`` here: this
module is imported by :mod:`results.report`, which defines them).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from results.report_html import MAX_ROWS, escape, html_table

#: At most this many failures per workspace.
MAX_FAILURES = 50


def sweeps_section(states: Sequence[Any]) -> str:
    rows = [[state.name, sweep.get("name", ""), sweep.get("source", ""), sweep.get("launched", "")]
            for state in states for sweep in state.sweeps]
    if not rows:
        return "<p>No sweep has been launched into these workspaces.</p>"
    return html_table(["workspace", "sweep", "sweep file", "launched"], rows)


def stages_section(states: Sequence[Any]) -> str:
    parts = []
    for state in states:
        parts.append(f"<h3>{escape(state.name)}</h3>")
        if not state.stage_counts:
            parts.append("<p>No stage.</p>")
            continue
        rows = []
        totals = dict.fromkeys(state.states, 0)
        for kind, counts in state.stage_counts.items():
            per_state = [counts.get(s, 0) for s in state.states]
            rows.append([kind, *per_state, sum(per_state)])
            for s, n in zip(state.states, per_state, strict=True):
                totals[s] += n
        rows.append(["all", *totals.values(), sum(totals.values())])
        parts.append(html_table(["kind", *state.states, "total"], rows, numeric_from=1, last_row_total=True))
    return "".join(parts)


def failures_section(states: Sequence[Any]) -> str:
    parts = []
    for state in states:
        if not state.failures:
            continue
        parts.append(f"<h3>{escape(state.name)}: {len(state.failures)} failed stage(s)</h3>")
        for failure in state.failures[:MAX_FAILURES]:
            parts.append('<div class="failure">')
            parts.append(f"<h4>{escape(failure.key)} <span class=\"label\">{escape(failure.label)}</span></h4>")
            detail = f"{failure.error_class}, attempt {failure.attempts}" + (f", {failure.where}" if failure.where
                                                                            else "")
            parts.append(f"<p>{escape(detail)}</p><pre>{escape(failure.message or '(no message)')}</pre>")
            for log, tail in failure.logs:
                parts.append(f'<p class="log">last lines of {escape(log)}:</p><pre>{escape(tail or "(empty)")}</pre>')
            parts.append("</div>")
        if len(state.failures) > MAX_FAILURES:
            parts.append(f"<p>… and {len(state.failures) - MAX_FAILURES} more: "
                         f"<code>prunesweep status {escape(state.name)}</code> lists them all.</p>")
    return "".join(parts) or "<p>No failed stage.</p>"


def missing_section(states: Sequence[Any]) -> str:
    parts = []
    for state in states:
        done = state.cells - len(state.missing)
        parts.append(f"<h3>{escape(state.name)}: {done} of {state.cells} cells done, {len(state.missing)} missing</h3>")
        if not state.missing:
            continue
        rows = [[cell.get("sweep"), cell.get("mask_source"), cell.get("init"), cell.get("transfer") or "",
                 cell.get("rewind"), f"{float(cell['nominal_fraction']):g}", cell.get("seed"),
                 cell.get("stage_key"), cell.get("state")] for cell in state.missing[:MAX_ROWS]]
        parts.append(html_table(["sweep", "mask source", "init", "transfer", "rewind", "fraction", "seed",
                                 "stage", "state"], rows))
        if len(state.missing) > MAX_ROWS:
            parts.append(f"<p>… and {len(state.missing) - MAX_ROWS} more: "
                         f"<code>prunesweep status {escape(state.name)} --all-missing</code> lists them all.</p>")
    return "".join(parts) or "<p>No workspace.</p>"
