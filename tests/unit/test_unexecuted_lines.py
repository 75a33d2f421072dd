"""bench/unexecuted_lines.py on coverage data written here: a snapshot's copy of a file counts as the file, and
``--check`` fails on an unexecuted line that no table of the pages lists."""
from __future__ import annotations

import importlib.util

from conftest import ROOT
from coverage import Coverage, CoverageData

_spec = importlib.util.spec_from_file_location("unexecuted_lines", ROOT / "bench" / "unexecuted_lines.py")
unexecuted_lines = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(unexecuted_lines)

SEEDS = "workers/training/seeds.py"


def _statements(relative):
    return Coverage(data_file=None, config_file=str(ROOT / "pyproject.toml")).analysis2(str(ROOT / relative))[1]


def _data(tmp_path, files):
    data = CoverageData(basename=str(tmp_path / ".coverage"))
    data.add_lines({path: lines for path, lines in files.items()})
    data.write()
    return tmp_path / ".coverage"


def test_a_snapshots_copy_counts_as_the_checkouts_file(tmp_path):
    statements = _statements(SEEDS)
    first, rest = statements[:2], statements[2:]
    data = _data(tmp_path, {str(ROOT / SEEDS): first,
                            f"/tmp/ws/slurm/code/0123456789abcdef/{SEEDS}": rest,
                            "/elsewhere/site-packages/workers_other/x.py": [1]})
    executed = unexecuted_lines.executed_lines(data)
    assert set(executed) == {SEEDS} and executed[SEEDS] == set(statements)
    total, done, missing = unexecuted_lines.unexecuted(data)
    assert not any(place[0] == SEEDS for place in missing)
    assert done == total - sum(map(len, missing.values())) and done >= len(statements)


def test_the_check_fails_on_a_line_no_page_lists_and_passes_once_listed(tmp_path, capsys):
    data = _data(tmp_path, {str(ROOT / SEEDS): []})  # nothing of workers/ ran
    page = tmp_path / "page.md"
    page.write_text("# Lines only a GPU runs\n\n| `workers/training/seeds.py` `derive_seed` | x |\n")
    assert unexecuted_lines.main(["--data", str(data), "--check", str(page)]) == 1
    err = capsys.readouterr().err
    assert f"NOT LISTED in {page}: workers/training/seeds.py <module>" in err
    assert "derive_seed" not in err  # listed in the GPU table
    every = set(unexecuted_lines.unexecuted(data)[2])
    gaps = tmp_path / "gaps.md"
    gaps.write_text("## Known gaps\n\n" + "".join(f"| `{file}` `{function}` | x |\n" for file, function in every))
    assert unexecuted_lines.main(["--data", str(data), "--check", str(page), str(gaps)]) == 0
    # a row under a heading that names neither table lists nothing
    gaps.write_text("## Other\n\n" + "".join(f"| `{file}` `{function}` | x |\n" for file, function in every))
    assert unexecuted_lines.main(["--data", str(data), "--check", str(page), str(gaps)]) == 1
