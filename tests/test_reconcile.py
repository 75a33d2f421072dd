"""The ledger follows the artifacts on disk (unit level; the end-to-end tests run real stages)."""
from __future__ import annotations

import socket

from orchestrator.ledger import Ledger
from orchestrator.reconcile import reconcile
from orchestrator.stages import Stage
from orchestrator.workspace import materialise, stage_dir
from workers.artifacts import write_done


def _workspace(tmp_path, n=3):
    stages = [Stage("dense", {"seed": i}, {"seed": i}, label=f"dense {i}", epochs=1) for i in range(n)]
    materialise(tmp_path, stages)
    ledger = Ledger(tmp_path)
    ledger.register("s", "s.yaml", "{}", {}, stages, [])
    return ledger, [stage.key for stage in stages]


def _finish(tmp_path, key):
    folder = stage_dir(tmp_path, key)
    (folder / "final.pt").write_bytes(b"weights" * 100)
    write_done(folder, ["final.pt"], {"top1": 0.5})


def test_checksummed_artifact_is_done_whatever_the_ledger_says(tmp_path):
    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[0])
    ledger.mark_failed(keys[0], "ValueError", "boom")
    assert reconcile(tmp_path, ledger) == {keys[0]}
    assert ledger.stages([keys[0]])[0]["state"] == "done"


def test_corrupted_artifact_is_never_done_and_is_planned_again(tmp_path):
    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[0])
    ledger.mark_done(keys[0])
    path = stage_dir(tmp_path, keys[0]) / "final.pt"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert reconcile(tmp_path, ledger) == set()
    row = ledger.stages([keys[0]])[0]
    assert row["state"] == "planned" and row["error_class"] == "CorruptArtifact"
    assert not (stage_dir(tmp_path, keys[0]) / "DONE.json").exists()
    # every artifact it listed goes too: a rerun recomputes all of them, none is trusted
    assert not path.exists()


def test_truncated_artifact_is_planned_again(tmp_path):
    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[1])
    path = stage_dir(tmp_path, keys[1]) / "final.pt"
    path.write_bytes(path.read_bytes()[:20])
    assert reconcile(tmp_path, ledger) == set()
    assert ledger.stages([keys[1]])[0]["error_class"] == "CorruptArtifact"


def test_running_stage_whose_process_is_gone_is_not_running(tmp_path):
    ledger, keys = _workspace(tmp_path)
    ledger.mark_running(keys[2], socket.gethostname(), 2**22 + 12345, "local")
    reconcile(tmp_path, ledger)
    row = ledger.stages([keys[2]])[0]
    assert row["state"] == "planned" and row["error_class"] == "Interrupted"


def test_done_in_ledger_but_artifacts_gone(tmp_path):
    ledger, keys = _workspace(tmp_path)
    ledger.mark_done(keys[0])
    reconcile(tmp_path, ledger)
    assert ledger.stages([keys[0]])[0]["state"] == "planned"
