"""A stage's cancel request (``cancel.json``) read back checked like every record, and the stage keys
``cancel --stage`` takes (a key, a unique prefix, or a did-you-mean)."""
from __future__ import annotations

import os

import pytest

from orchestrator.backends.cancel_request import cancel_reason, clear_cancel, request_cancel
from workers.stages.paths import CANCEL_FILE
from orchestrator.commands.cancel import resolve_key
from orchestrator.errors import UserError

KEYS = ["dense-cd6f885c6504", "dense-cd6f11111111", "imp-1d9552040f15", "eval-0a1b2c3d4e5f"]


def test_a_request_is_read_back_with_its_reason_and_cleared(tmp_path):
    assert cancel_reason(tmp_path) is None
    request_cancel(tmp_path, "cancelled by alice\non node7")
    assert cancel_reason(tmp_path) == "cancelled by alice on node7"  # one line
    clear_cancel(tmp_path)
    assert cancel_reason(tmp_path) is None
    clear_cancel(tmp_path)  # nothing there: nothing to do


@pytest.mark.parametrize("content, says", [
    (b"not json", "is not JSON"),
    (b"[1, 2]", "not a mapping"),
    (b'{"reason": "x\\u0007y"}', "'reason' is not a line of text"),
    (b'{"reason": "ok", "pid": -3}', "'pid' is not a process id"),
    (b"{" + b" " * 5000 + b"}", "cannot be read: is larger than 4097 bytes"),
], ids=["text", "list", "control character", "negative pid", "huge"])
def test_a_damaged_request_still_cancels_and_says_what_is_wrong(tmp_path, content, says):
    (tmp_path / CANCEL_FILE).write_bytes(content)
    reason = cancel_reason(tmp_path)
    assert reason is not None and reason.startswith(f"cancelled (its {CANCEL_FILE} ") and says in reason


def test_a_link_or_a_folder_named_like_the_request_is_no_request(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"reason": "planted"}')
    os.symlink(target, tmp_path / CANCEL_FILE)
    assert cancel_reason(tmp_path) is None
    os.unlink(tmp_path / CANCEL_FILE)
    (tmp_path / CANCEL_FILE).mkdir()
    assert cancel_reason(tmp_path) is None
    clear_cancel(tmp_path)  # a folder is left alone
    assert (tmp_path / CANCEL_FILE).is_dir() and target.exists()


@pytest.mark.parametrize("given, key", [
    ("imp-1d9552040f15", "imp-1d9552040f15"),
    ("imp-1d95", "imp-1d9552040f15"),
    ("0a1b", "eval-0a1b2c3d4e5f"),  # a prefix of the hash alone, as git takes a short commit id
    ("dense-cd6f8", "dense-cd6f885c6504"),
])
def test_a_key_or_a_unique_prefix_names_its_stage(given, key):
    assert resolve_key(given, KEYS) == key


@pytest.mark.parametrize("given, says", [
    ("dense-cd6f", "--stage dense-cd6f: the prefix matches 2 stages (dense-cd6f11111111, dense-cd6f885c6504)"),
    ("imp-1d9552040f16", "no stage of this workspace has that key; did you mean imp-1d9552040f15?"),
    ("train-xyz", "no stage of this workspace has that key; `prunesweep status WORKSPACE` lists them"),
    ("", "no stage of this workspace has that key"),
])
def test_a_wrong_key_is_refused_in_one_line(given, says):
    with pytest.raises(UserError) as refused:
        resolve_key(given, KEYS)
    assert says in str(refused.value) and "\n" not in str(refused.value)
