"""What SLURM prints, read by the backend's pure parsers: recorded answers of a real cluster
(tests/cluster/slurm.sh), no cluster needed. The real-cluster tests are test_slurm_*.py."""
from __future__ import annotations

from orchestrator.backends.slurm.backend import judge_job
from orchestrator.backends.slurm.inputs import inputs_ready
from orchestrator.backends.slurm.scheduler_output import (
    array_ids,
    describe,
    failed_job_reason,
    parse_max_array_size,
    parse_sacct,
    parse_squeue,
)

#: ``squeue -h -t all -r -j 1,7 -o '%i|%T|%r|%N|%S'``: an array of three (one cancelled while pending),
#: and a dependent array waiting for it (one task that never can start).
SQUEUE = """\
1_2|CANCELLED|Resources||2026-12-01T03:37:58
1_1|RUNNING|None|vm|2026-12-01T04:37:13
1_0|RUNNING|None|vm|2026-12-01T04:37:13
7_0|PENDING|DependencyNeverSatisfied||N/A
7_1|PENDING|Dependency||N/A
"""

#: ``sacct -n -P -X -j 1,3 -o JobID,State,Reason,NodeList,Start``: a cancelled array (collapsed), then one
#: array's tasks.
SACCT = """\
1_[0-2]|CANCELLED by 0|None|None assigned|Unknown
3_0|COMPLETED|None|vm|2026-12-01T04:27:11
3_1|TIMEOUT|None|vm|2026-12-01T04:27:11
3_1|FAILED|None|vm|2026-12-01T04:20:00
3_2|OUT_OF_MEMORY|None|vm|2026-12-01T04:27:12
"""

#: a few lines of ``scontrol show config``.
SCONTROL = """\
Configuration data as of 2026-12-01T01:46:40
MaxArraySize            = 1001
MaxJobCount             = 50000
"""


def test_squeue_lines_give_state_and_reason_of_the_wanted_jobs_only():
    states = parse_squeue(SQUEUE, ["1_0", "1_2", "7_0", "7_1", "9_0"])
    assert states == {"1_0": ("RUNNING", "None", "vm", "2026-12-01T04:37:13"),
                      "1_2": ("CANCELLED", "Resources", "", "2026-12-01T03:37:58"),
                      "7_0": ("PENDING", "DependencyNeverSatisfied", "", ""), "7_1": ("PENDING", "Dependency", "", "")}


def test_sacct_keeps_the_first_word_of_the_state_and_the_first_line_of_a_job():
    states = parse_sacct(SACCT, ["3_0", "3_1", "3_2", "1_0"])
    assert {job: state[:2] for job, state in states.items()} == {
        "3_0": ("COMPLETED", "None"), "3_1": ("TIMEOUT", "None"), "3_2": ("OUT_OF_MEMORY", "None")}
    assert states["3_1"][2:] == ("vm", "2026-12-01T04:27:11")
    assert parse_sacct(SACCT, ["1_[0-2]"]) == {"1_[0-2]": ("CANCELLED", "None", "", "")}


def test_empty_or_odd_output_gives_nothing_rather_than_raising():
    assert parse_squeue("", ["1_0"]) == {} and parse_sacct("", ["1_0"]) == {}
    assert parse_squeue("1_0\n", ["1_0"]) == {"1_0": ("", "", "", "")}
    assert parse_sacct("1_0||\n", ["1_0"]) == {"1_0": ("UNKNOWN", "", "", "")}


def test_a_live_job_is_queued_with_its_reason_or_running_with_node_and_start():
    states = parse_squeue(SQUEUE, ["1_0", "7_1"])
    assert describe(states["7_1"]) == ("queued", "Dependency")
    assert describe(states["1_0"]) == ("running", "on vm since 2026-12-01 04:37:13")
    assert describe(("PENDING", "", "", "")) == ("queued", "pending")


def test_max_array_size_comes_from_scontrol_or_is_unknown():
    assert parse_max_array_size(SCONTROL) == 1001
    assert parse_max_array_size("MaxJobCount = 50000\n") is None


def test_array_ids_are_the_job_ids_before_the_task_index():
    assert array_ids(["12_3", "12_4", "9_0", "15"]) == ["12", "15", "9"]


def test_a_failed_job_is_explained_from_submitit_logs():
    assert failed_job_reason([]) == ("Failed", "")
    assert failed_job_reason(["submitit WARNING: Job has timed-out too many times."])[0] == "Timeout"
    assert failed_job_reason(["Traceback (most recent call last):\n  ...\nValueError: x"]) == ("PythonException", "")


def test_verdicts_from_scheduler_states(tmp_path):
    assert judge_job("1_0", ("RUNNING", "None"), tmp_path, "").state == "running"
    blocked = judge_job("7_0", ("PENDING", "DependencyNeverSatisfied"), tmp_path, "")
    assert blocked.state == "blocked" and "DependencyNeverSatisfied" in blocked.message
    unknown = judge_job("1_2", None, tmp_path, "")
    assert (unknown.state, unknown.error_class) == ("failed", "Cancelled")
    timeout = judge_job("3_1", ("TIMEOUT", "None"), tmp_path, "last log line")
    assert (timeout.state, timeout.error_class) == ("failed", "Timeout") and "last log line" in timeout.message
    done_without = judge_job("3_0", ("COMPLETED", "None"), tmp_path, "")
    assert done_without.error_class == "CompletedWithoutArtifacts"
    (tmp_path / "3_2").mkdir()
    (tmp_path / "3_2" / "3_2_0_log.err").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    assert judge_job("3_2", ("FAILED", "None"), tmp_path, "").error_class == "PythonException"


def test_a_job_that_recorded_its_stage_blocked_makes_it_blocked_naming_the_missing_input(tmp_path):
    workspace = tmp_path / "ws"
    stage = workspace / "stages" / "eval-1"
    stage.mkdir(parents=True)
    (stage / "stage.json").write_text('{"key": "eval-1", "deps": {"previous": "imp-1", "rewind": "dense-1"}}')
    (workspace / "stages" / "dense-1").mkdir()
    (workspace / "stages" / "dense-1" / "DONE.json").write_text("{}")
    assert not inputs_ready(stage, {"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "9"})
    folder = workspace / "slurm"
    verdict = judge_job("7_1", ("COMPLETED", "None"), folder, "", key="eval-1")
    assert (verdict.state, verdict.message) == ("blocked", "imp-1")
    # a record of another job (an earlier launch) is not this job's story
    assert judge_job("8_0", ("COMPLETED", "None"), folder, "", key="eval-1").state == "failed"
    (workspace / "stages" / "imp-1").mkdir()
    (workspace / "stages" / "imp-1" / "DONE.json").write_text("{}")
    assert inputs_ready(stage, {"SLURM_JOB_ID": "10"})
