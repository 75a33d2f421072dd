"""The lines of ``workers/`` that no test executed, from the coverage data of a ``python -m pytest`` run.

Every ``python -m pytest`` records line coverage of ``workers/`` in ``.coverage`` (pytest-cov, configured in
``setup.cfg`` and ``pyproject.toml``), in the test process and in every Python process the tests start: the
stages' ``python -m workers``, SLURM jobs running a code snapshot, Ray workers. This script prints the share of
``workers/`` statements executed and the unexecuted ones, grouped by file and enclosing function (a snapshot's
copy of a file counts as the file).

``--check PAGE...`` compares them with the pages' tables: every unexecuted line must lie in a function that a
row names, either under a heading naming the GPU (a function only a GPU runs, with the preflight check that
runs it: docs/testing.md) or under one naming a gap (a known gap of the CPU tests: docs/untested-lines.md);
exit 1 naming each line in neither. A listed function that ran whole is printed as one to remove (exit 0: a
list one row too long hides no line).

    python -m pytest && python bench/unexecuted_lines.py [--data .coverage]
    python bench/unexecuted_lines.py --check docs/testing.md docs/untested-lines.md      # what .ci/run runs
    python bench/unexecuted_lines.py --markdown      # table rows for those pages, from the data
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "workers"
#: a table row of docs/testing.md naming a function: | `workers/x.py` `name` | ...
ROW = re.compile(r"^\|\s*`(workers/[\w/]+\.py)`\s+`([\w.<>]+)`")


def _relative(measured: str) -> str | None:
    """``workers/...`` of a measured file (this checkout's, or a snapshot's copy of it), else None."""
    parts = Path(measured).parts
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == PACKAGE:
            relative = Path(*parts[index:])
            return relative.as_posix() if (ROOT / relative).is_file() else None
    return None


def executed_lines(data_file: Path) -> dict[str, set[int]]:
    """``workers/...`` file -> the line numbers any measured process executed in it."""
    from coverage import CoverageData

    data = CoverageData(basename=str(data_file))
    data.read()
    executed: dict[str, set[int]] = defaultdict(set)
    for measured in data.measured_files():
        relative = _relative(measured)
        if relative is not None:
            executed[relative] |= set(data.lines(measured) or ())
    return executed


def _functions(source: str) -> dict[int, str]:
    """Line -> the qualified name of the innermost function or class around it (lines outside any: none)."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                for line in range(child.lineno, (child.end_lineno or child.lineno) + 1):
                    owner[line] = name
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return owner


def unexecuted(data_file: Path) -> tuple[int, int, dict[tuple[str, str], list[int]]]:
    """(statements, executed statements, (file, function) -> its unexecuted statement lines) over ``workers/``.

    The statements are coverage.py's own (its parser, the project's exclusions); a file no process imported
    counts with all its statements unexecuted."""
    from coverage import Coverage

    executed = executed_lines(data_file)
    reporter = Coverage(data_file=None, config_file=str(ROOT / "pyproject.toml"))
    total = done = 0
    missing: dict[tuple[str, str], list[int]] = defaultdict(list)
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        statements = reporter.analysis2(str(path))[1]
        ran = executed.get(relative, set())
        owner = _functions(path.read_text())
        total += len(statements)
        for line in statements:
            if line in ran:
                done += 1
            else:
                missing[(relative, owner.get(line, "<module>"))].append(line)
    return total, done, dict(missing)


def listed(pages: list[Path]) -> dict[tuple[str, str], str]:
    """(file, function) -> ``gpu`` or ``gap``: the rows of the pages' tables under a heading that says
    which (one naming the GPU, one naming a gap); rows under other headings are not read."""
    rows: dict[tuple[str, str], str] = {}
    for page in pages:
        table = None
        for line in page.read_text().splitlines():
            if line.startswith("#"):
                heading = line.lower()
                table = "gap" if "gap" in heading else "gpu" if "gpu" in heading else None
            elif table and (match := ROW.match(line)):
                rows[(match[1], match[2])] = table
    return rows


def _ranges(lines: list[int]) -> str:
    spans: list[list[int]] = []
    for line in sorted(lines):
        if spans and line == spans[-1][1] + 1:
            spans[-1][1] = line
        else:
            spans.append([line, line])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def main(argv: list[str] | None = None) -> int:
    """Print the figure and the unexecuted lines; with ``--check``, exit 1 on a line the page does not list."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".coverage", help="the combined coverage data file")
    parser.add_argument("--check", type=Path, nargs="+", metavar="PAGE",
                        help="the pages whose tables must list every line")
    parser.add_argument("--markdown", action="store_true", help="print table rows for the page instead")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"unexecuted_lines: no coverage data at {args.data}: run `python -m pytest` first", file=sys.stderr)
        return 2
    total, done, missing = unexecuted(args.data)
    lines = sum(len(v) for v in missing.values())
    print(f"workers/: {done} of {total} statements executed ({100.0 * done / total:.1f}%), {lines} not, "
          f"in {len(missing)} functions")
    for (relative, function), numbers in sorted(missing.items()):
        if args.markdown:
            print(f"| `{relative}` `{function}` | {_ranges(numbers)} |")
        else:
            print(f"  {relative} {function}: {_ranges(numbers)}")
    if args.check is None:
        return 0
    rows = listed(args.check)
    pages = " ".join(map(str, args.check))
    unlisted = {place: numbers for place, numbers in missing.items() if place not in rows}
    for place in sorted(set(rows) - set(missing)):
        print(f"ran whole, remove from {pages}: {place[0]} {place[1]} ({rows[place]})")
    for (relative, function), numbers in sorted(unlisted.items()):
        print(f"NOT LISTED in {pages}: {relative} {function}: lines {_ranges(numbers)}", file=sys.stderr)
    gpu = sum(len(numbers) for place, numbers in missing.items() if rows.get(place) == "gpu")
    print(f"{gpu} unexecuted lines in the functions of the GPU table, "
          f"{lines - gpu - sum(map(len, unlisted.values()))} in known gaps, "
          f"{sum(map(len, unlisted.values()))} unlisted")
    return 1 if unlisted else 0


if __name__ == "__main__":
    sys.exit(main())
