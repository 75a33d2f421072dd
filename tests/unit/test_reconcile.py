"""The ledger follows the artifacts on disk (unit level; the end-to-end tests run real stages)."""
from __future__ import annotations

import os
import socket

from orchestrator.state.ledger import Ledger
from orchestrator.state.reconcile import reconcile
from orchestrator.planning.stage_identity import Stage
from orchestrator.state.workspace import materialise
from workers.stages.paths import stage_dir
from workers.stages.artifacts import verify_done, write_done


def _workspace(tmp_path, n=3):
    stages = [Stage("dense", {"seed": i}, {"seed": i}, label=f"dense {i}", epochs=1) for i in range(n)]
    materialise(tmp_path, stages)
    ledger = Ledger(tmp_path)
    ledger.register("s", "s.yaml", "{}", {}, stages, [])
    return ledger, [stage.key for stage in stages]


def _finish(tmp_path, key):
    folder = stage_dir(tmp_path, key)
    (folder / "final.pt").write_bytes(b"weights" * 100)
    (folder / "metrics.json").write_text('{"top1": 0.5}')
    write_done(folder, ["final.pt", "metrics.json"], {"top1": 0.5})


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


def _settle(folder, seconds=60):
    """Date every file of a stage folder, and the folder, back, as if written a minute ago."""
    for path in [*folder.iterdir(), folder]:
        info = path.stat()
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns - seconds * 10**9))


def _flip_byte_in_place(path):
    """Damage a file keeping its size, inode and modification time (what bit rot does)."""
    info = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(10)
        byte = handle.read(1)
        handle.seek(10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _done_and_stamped(tmp_path):
    """A workspace whose first stage is done, a minute old, and verified once (stamps kept)."""
    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[0])
    folder = stage_dir(tmp_path, keys[0])
    _settle(folder)
    assert reconcile(tmp_path, ledger) == {keys[0]}
    return ledger, keys, folder


def test_unchanged_artifacts_are_trusted_by_their_stamps_and_rehashed_on_request(tmp_path):
    ledger, keys, folder = _done_and_stamped(tmp_path)
    assert set(ledger.verified_stamps(keys[0])) == {"DONE.json", "final.pt", "metrics.json"}
    _flip_byte_in_place(folder / "final.pt")
    # same size, mtime and inode: the recorded stamp is trusted, nothing is read
    assert reconcile(tmp_path, ledger) == {keys[0]}
    assert reconcile(tmp_path, ledger, rehash=True) == set()
    assert ledger.stages([keys[0]])[0]["error_class"] == "CorruptArtifact"
    assert ledger.verified_stamps(keys[0]) is None and not (folder / "final.pt").exists()


def test_an_artifact_rewritten_after_its_stamp_was_taken_is_hashed_again(tmp_path):
    ledger, keys, folder = _done_and_stamped(tmp_path)
    path = folder / "final.pt"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new modification time
    assert reconcile(tmp_path, ledger) == set()
    assert ledger.stages([keys[0]])[0]["error_class"] == "CorruptArtifact"


def test_freshly_written_artifacts_get_no_stamp(tmp_path):
    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[0])  # modified just now: within the file system's timestamp granularity
    assert reconcile(tmp_path, ledger) == {keys[0]}
    assert ledger.verified_stamps(keys[0]) is None


def test_a_status_with_verify_finds_damage_its_stamps_hide(tmp_path, capsys):
    from orchestrator.cli import main

    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[0])
    _settle(stage_dir(tmp_path, keys[0]))
    assert main(["status", str(tmp_path)]) == 0
    _flip_byte_in_place(stage_dir(tmp_path, keys[0]) / "final.pt")
    main(["status", str(tmp_path)])
    assert "CorruptArtifact" not in capsys.readouterr().out
    main(["status", str(tmp_path), "--verify"])
    assert "CorruptArtifact" in capsys.readouterr().out


def test_a_glance_trusts_an_unchanged_folder_and_the_stamp_check_sees_a_rewrite_in_place(tmp_path):
    ledger, keys, folder = _done_and_stamped(tmp_path)
    assert keys[0] in ledger.all_folder_stamps()
    path = folder / "final.pt"
    with open(path, "r+b") as handle:  # rewritten in place: a new modification time, the same folder entries
        handle.write(b"X")
    assert reconcile(tmp_path, ledger, glance=True) == {keys[0]}  # what a reading command looks at
    assert reconcile(tmp_path, ledger) == set()  # what launch and resume look at, before using it
    assert ledger.stages([keys[0]])[0]["error_class"] == "CorruptArtifact"


def test_a_glance_sees_a_file_deleted_or_added(tmp_path):
    ledger, keys, folder = _done_and_stamped(tmp_path)
    (folder / "notes.txt").write_text("a file no stage writes")  # the folder changes: its files are checked
    assert reconcile(tmp_path, ledger, glance=True) == {keys[0]}
    (folder / "final.pt").unlink()
    assert reconcile(tmp_path, ledger, glance=True) == set()
    assert ledger.stages([keys[0]])[0]["error_class"] == "CorruptArtifact"


def test_an_unchanged_workspace_is_glanced_at_without_a_write(tmp_path):
    ledger, keys, folder = _done_and_stamped(tmp_path)
    reconcile(tmp_path, ledger)  # the folder's stamp is renewed once, after its files' stamps held
    before = ledger.connection.total_changes
    assert reconcile(tmp_path, ledger, glance=True) == {keys[0]}
    assert reconcile(tmp_path, ledger) == {keys[0]}
    assert ledger.connection.total_changes == before


def test_a_symbolic_link_in_place_of_an_artifact_is_never_done(tmp_path):
    ledger, keys = _workspace(tmp_path)
    _finish(tmp_path, keys[0])
    folder = stage_dir(tmp_path, keys[0])
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes((folder / "final.pt").read_bytes())  # the same bytes: only the link is wrong
    (folder / "final.pt").unlink()
    (folder / "final.pt").symlink_to(outside)
    assert verify_done(folder) == (False, "final.pt is a symbolic link, which no stage writes")
    assert reconcile(tmp_path, ledger) == set()
    assert outside.exists()  # invalidating the stage removed the link, not what it points to
