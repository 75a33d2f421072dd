"""The test folders share one import namespace (setup.cfg's ``pythonpath``, no packages), so
two test modules with the same file name in different folders break collection of the whole suite."""
from __future__ import annotations

from collections import Counter

from conftest import ROOT


def test_every_test_module_has_a_name_of_its_own():
    names = Counter(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
