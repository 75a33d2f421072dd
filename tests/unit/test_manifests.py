"""A stage is done only by a complete, well-formed manifest; a bad one is rerun, never a crash or a result."""
from __future__ import annotations

import json

import pytest

from workers.stages.artifacts import invalidate, verify_done, write_done
from workers.stages.paths import DONE_FILE, METRICS_FILE


def _stage(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / METRICS_FILE).write_text("{}")
    (stage / "final.pt").write_bytes(b"weights")
    write_done(stage, ["final.pt", METRICS_FILE], {"top1": 0.5})
    return stage


def test_a_complete_manifest_is_done(tmp_path):
    assert verify_done(_stage(tmp_path)) == (True, "")


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: m.update(files={}), "does not list metrics.json"),
    (lambda m: m["files"].pop(METRICS_FILE), "does not list metrics.json"),
    (lambda m: m.update(files=["final.pt"]), "'files' mapping"),
    (lambda m: m.pop("metrics"), "no 'metrics' mapping"),
    (lambda m: m["files"].update({"../outside.txt": m["files"]["final.pt"]}), "not a file of the stage folder"),
    (lambda m: m["files"].update({"/etc/hostname": m["files"]["final.pt"]}), "not a file of the stage folder"),
    (lambda m: m["files"]["final.pt"].update(size="7"), "no valid size and sha256"),
    (lambda m: m["files"]["final.pt"].pop("sha256"), "no valid size and sha256"),
    (lambda m: m.clear() or m.update({"files": 3, "metrics": {}}), "'files' mapping"),
])
def test_a_malformed_manifest_is_not_done(tmp_path, mutate, needle):
    stage = _stage(tmp_path)
    manifest = json.loads((stage / DONE_FILE).read_text())
    mutate(manifest)
    (stage / DONE_FILE).write_text(json.dumps(manifest))
    ok, reason = verify_done(stage)
    assert not ok and needle in reason, reason


@pytest.mark.parametrize("text", ["", "[]", "null", "{", "\\x00\\x01"])
def test_an_unparsable_manifest_is_not_done(tmp_path, text):
    stage = _stage(tmp_path)
    (stage / DONE_FILE).write_text(text)
    assert verify_done(stage)[0] is False


def test_invalidating_an_outside_pointing_manifest_deletes_nothing_outside(tmp_path):
    stage = _stage(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    manifest = json.loads((stage / DONE_FILE).read_text())
    manifest["files"]["../outside.txt"] = manifest["files"]["final.pt"]
    manifest["files"][str(outside)] = manifest["files"]["final.pt"]
    (stage / DONE_FILE).write_text(json.dumps(manifest))
    invalidate(stage)
    assert outside.read_text() == "precious" and not (stage / DONE_FILE).exists()


def test_invalidate_skips_a_listed_name_with_a_nul_byte(tmp_path):
    """A damaged DONE.json listing "a\\x00b" (found by the fuzz, seed 2111293422): the manifest goes, nothing raises."""
    import json

    from workers.stages.artifacts import invalidate
    from workers.stages.paths import DONE_FILE

    (tmp_path / DONE_FILE).write_text(json.dumps({"files": ["a\x00b", "kept.pt"]}))
    (tmp_path / "kept.pt").write_bytes(b"x")
    invalidate(tmp_path)
    assert not (tmp_path / DONE_FILE).exists() and not (tmp_path / "kept.pt").exists()
