"""The backend registry: a new backend is one subpackage plus one registry line.

``tests/sequential_backend/`` is such a backend; registering it here (the one line) is all
it takes for the real driver, reconcile, status and cancel to run a sweep with it.
"""
from __future__ import annotations

import pytest
import yaml
from conftest import TINY, ledger_states

import results
from orchestrator import driver
from orchestrator.backends import BACKENDS, backend_class, get_backend, settings_model
from orchestrator.errors import UserError
from orchestrator.spec import SweepSpec, load_spec
from orchestrator.commands.status import print_status
from workers.stages.paths import DONE_FILE, stage_dir

#: a few stages of the digits mini sweep (dense, IMP levels, evaluations).
SMALL = dict(TINY, name="small", mask_source=["labels", "random"], init=["winning_ticket"])


@pytest.fixture(scope="module")
def sequential():
    BACKENDS["sequential"] = "sequential_backend"  # the one registry line
    yield "sequential"
    del BACKENDS["sequential"]


def _launch(tmp_path, name, backend):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(SMALL, workspace=str(tmp_path / name))))
    _, summary = driver.launch(load_spec(path), str(path), backend, progress=False)
    return tmp_path / name, summary


@pytest.fixture(scope="module")
def launched(sequential, tmp_path_factory):
    """The small sweep launched on the sequential backend."""
    return _launch(tmp_path_factory.mktemp("registry"), "seq", sequential)


def test_a_registered_backend_runs_a_sweep_through_the_real_driver(launched, tmp_path, capsys):
    workspace, summary = launched
    assert summary.exit_code == 0 and summary.failed == summary.blocked == 0 and summary.ran > 3
    rows = ledger_states(workspace)
    assert {row["state"] for row in rows.values()} == {"done"}
    assert {row["backend"] for row in rows.values()} == {"sequential"}
    print_status(workspace)  # status and cancel ask the registry about the new backend too
    assert "cells: 4 of 4 done" in capsys.readouterr().out
    assert driver.cancel(workspace) == []

    # the same numbers as the local backend: the backend decides where stages run, never what they compute
    local, _ = _launch(tmp_path, "local", "local")
    by_cell = lambda ws: {(r.mask_source, r.init, r.nominal_fraction): r.top1 for r in results.load(ws).itertuples()}  # noqa: E731
    assert by_cell(workspace) == by_cell(local) and len(by_cell(local)) == 4


def test_a_running_stage_of_a_gone_driver_is_planned_again_by_the_default_judgement(launched):
    from orchestrator.state.ledger import Ledger
    from orchestrator.state.reconcile import reconcile

    workspace, _ = launched
    key = next(iter(ledger_states(workspace)))
    ledger = Ledger(workspace)
    try:
        (stage_dir(workspace, key) / DONE_FILE).unlink()
        ledger.mark_running(key, "elsewhere", 1, "sequential", None)
        reconcile(workspace, ledger)  # no prunesweep holds the lock: its driver is gone
        row = next(row for row in ledger.stages() if row["key"] == key)
    finally:
        ledger.close()
    assert row["state"] == "planned" and row["error_class"] == "Interrupted"


def test_the_sweep_schema_takes_its_backend_sections_from_the_registry():
    assert {"local", "slurm", "ray"} <= set(SweepSpec.model_fields)
    for name in ("local", "slurm", "ray"):
        assert SweepSpec.model_fields[name].annotation is settings_model(name)
        assert backend_class(name).name == name


def test_an_unknown_backend_is_a_user_error_naming_the_allowed_ones():
    with pytest.raises(UserError, match="unknown backend 'nope'; allowed: local, slurm, ray"):
        get_backend("nope")
