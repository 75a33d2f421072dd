"""The sections of the report page drawn from the results rows: one top-1 figure per (dataset,
network) and the per-epoch curves (:mod:`results.top1_drawing`, inline SVG), the pivot tables,
the paired comparisons (:func:`results.compare`) and the transfer tables."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from results.comparison import Comparison
from results.report_html import MAX_ROWS, escape, html_table
from results.report_provenance import curves_section, inline_svg
from results.top1_drawing import Curves, DrawingProcess

#: At most this many curves in one figure; past it the figure (and its pivot table) pools
#: the sweeps and workspaces of that (dataset, network): one line per mask source x init.
MAX_CURVES = 12


@dataclass
class Group:
    """The pruning-grid rows of one (dataset, network), and how its curves are grouped."""

    name: str
    rows: pd.DataFrame
    by: list[str] | None
    note: str

    def sources(self) -> str:
        """Where the rows come from: ``"workspace: sweep, sweep; ..."`` (only sweeps with one workspace)."""
        if "workspace" not in self.rows.columns:
            return "sweep(s) " + ", ".join(map(str, dict.fromkeys(self.rows["sweep"])))
        pairs = self.rows[["workspace", "sweep"]].drop_duplicates()
        return "; ".join(f"{workspace}: " + ", ".join(map(str, sweeps["sweep"]))
                         for workspace, sweeps in pairs.groupby("workspace", sort=False))


def grid_groups(df: pd.DataFrame, columns: list[str]) -> list[Group]:
    """One group per value of ``columns``, in order of first appearance."""
    if df.empty:
        return []
    groups = []
    for values, rows in df.groupby(columns, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        name = " / ".join(map(str, values))
        by, note = _pooled_curves(rows)
        groups.append(Group(name, rows, by, note))
    return groups


def _pooled_curves(rows: pd.DataFrame) -> tuple[list[str] | None, str]:
    """None (a curve per setting, as ``results --plot``) unless that is more than :data:`MAX_CURVES` curves;
    then the mask source x init curves pooled over the sweeps and workspaces, and a note saying so."""
    identity = [c for c in ("workspace", "sweep", "mask_source", "init", "rewind") if c in rows.columns]
    curves = rows[identity].assign(one_shot=rows["level"].isna()).drop_duplicates()
    if len(curves) <= MAX_CURVES:
        return None, ""
    by = ["mask_source", "init"]
    if rows.loc[rows["mask_source"] != "random", "rewind"].nunique() > 1:
        by.append("rewind")
    sweeps = rows[[c for c in ("workspace", "sweep") if c in rows.columns]].drop_duplicates()
    workspaces = rows["workspace"].nunique() if "workspace" in rows.columns else 1
    note = (f"{len(curves)} curves: pooled over {len(sweeps)} sweep(s) in {workspaces} workspace(s), one line per "
            f"{' x '.join(by)} (n counts seeds: a seed's rows are averaged first, never counted twice); narrow with "
            "--where for one sweep's curves")
    return by + ["nominal_fraction"], note


def group_curves(groups: list[Group]) -> list[Curves]:
    """What each group's figure draws."""
    if not groups:
        return []
    from results.plot import top1_curves

    return [top1_curves(group.rows, title=group.name, by=group.by) for group in groups]


def figure_sections(groups: list[Group], curves: list[Curves], epochs: list[Curves],
                    drawer: DrawingProcess | None) -> tuple[str, str]:
    """The contents of the sections of the top-1 figures and of the per-epoch curves, their SVGs
    drawn by ``drawer``."""
    images = drawer.images() if drawer is not None and (curves or epochs) else None
    if images is None:  # no second process, or it failed: drawn here, the same figures
        from results.top1_drawing import svg

        images = [svg(one) for one in curves + epochs]
    top1 = "<p>No results on the pruning grid yet.</p>"
    if groups:
        parts = ['<div class="figures">']
        for number, (group, one, image) in enumerate(zip(groups, curves, images, strict=False)):
            parts.append(f"<figure>{inline_svg(image, f'top-1 vs fraction remaining: {group.name}', f'f{number}')}"
                         f"<figcaption>{escape(group.name)} ({escape(group.sources())}): {escape(one['note'])}"
                         + (f"<br>{escape(group.note)}" if group.note else "") + "</figcaption></figure>")
        top1 = "".join(parts) + "</div>"
    return top1, curves_section(epochs, images[len(curves):])


def pivots_section(groups: list[Group]) -> str:
    if not groups:
        return "<p>No results on the pruning grid yet.</p>"
    parts = ["<p>Top-1 in percent, mean ± standard error (n) over seeds, per fraction of weights remaining "
             "(measured).</p>"]
    for group in groups:
        parts.append(f"<h3>{escape(group.name)}</h3>" + (f"<p>{escape(group.note)}</p>" if group.note else ""))
        parts.append(_pivot_table(group.rows, group.by))
    return "".join(parts)


def _pivot_table(rows: pd.DataFrame, by: list[str] | None = None) -> str:
    from results.query import pivot

    try:
        table = pivot(rows, by=by)
    except ValueError as error:  # two settings in one cell: say which, as `results --pivot` does
        return f'<p class="problem">{escape(error)}</p>'
    header = [str(table.index.name), *map(str, table.columns)]
    body = [[index, *values] for index, values in zip(table.index, table.itertuples(index=False), strict=True)]
    return html_table(header, body, numeric_from=1)


def comparison_section(df: pd.DataFrame, comparison: Comparison) -> str:
    from results.comparison import compare, comparison_display, describe_test

    column, a, b, alternative = comparison
    result = compare(df, column, a, b, alternative=alternative)
    sign = {"two-sided": "vs", "greater": "&gt;", "less": "&lt;"}[alternative]
    parts = [f"<h3>{escape(column)}: {escape(a)} {sign} {escape(b)}</h3>",
             f"<p>Top-1 of {escape(column)}={escape(a)} minus {escape(column)}={escape(b)}, in percentage points, "
             f"paired by seed over the seeds both share; {escape(describe_test(result))}."]
    if result.attrs.get("averaged"):
        parts.append(f" {result.attrs['averaged']} row(s) repeating a side's setting and seed were averaged into one:"
                     " no seed counts twice.")
    if result.attrs.get("unpaired"):
        parts.append(f" {result.attrs['unpaired']} setting(s) with no seed on both sides are left out.")
    parts.append("</p>")
    if result.empty:
        return "".join(parts) + "<p>No setting has a seed on both sides.</p>"
    common, shown = comparison_display(result, rows=MAX_ROWS)
    if common:
        parts.append(f"<p>In every row: {escape(common)}</p>")
    significant = result["significant"].head(MAX_ROWS).tolist()
    parts.append(html_table(list(map(str, shown.columns)), shown.itertuples(index=False),
                            numeric_from=list(shown.columns).index(a), marked=significant))
    if len(result) > MAX_ROWS:
        separator = {"two-sided": ",", "greater": ">", "less": "<"}[alternative]
        parts.append(f"<p>… and {len(result) - MAX_ROWS} more rows: <code>prunesweep results WS... --compare "
                     f"'{escape(column)}={escape(a)}{separator}{escape(b)}'</code> prints them all.</p>")
    return "".join(parts)


def transfer_section(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "<p>No transfer evaluation in these results.</p>"
    rows = rows.assign(eval_dataset=rows["eval_dataset"].fillna(rows["dataset"]),
                       metric=rows["metric"].fillna("top1"))
    parts = []
    for (dataset, arch, target, metric), group in rows.groupby(["dataset", "arch", "eval_dataset", "metric"],
                                                                sort=False, dropna=False):
        what = {"map": "mAP", "map_11point": "11-point mAP"}.get(str(metric), "top-1")
        parts.append(f"<h3>{escape(dataset)} / {escape(arch)} → {escape(target)} ({escape(what)})</h3>")
        parts.append(f"<p>{escape(what)} in percent, mean ± standard error (n) over seeds; columns: mask source / "
                     "linear classifier, fine-tuning or pruning during fine-tuning.</p>")
        parts.append(_pivot_table(group))
    return "".join(parts)
