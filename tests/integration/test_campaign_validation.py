"""The campaign simulator (bench/campaign_model.py) against the real local SLURM cluster.

The validation DAG of bench/campaign_validation.py (48 planner stages sleeping drawn durations,
two stages killed by SIGKILL once, one raising) runs through the SLURM backend and in the
simulator's ``shipped`` policy: the makespans agree within 10% and the same stages end done,
failed, blocked and retried. And what the model assumes of a SLURM requeue is what SLURM does.
About 4 minutes on the shared 2-core machine.
"""
from __future__ import annotations

import re
import sys
import time
from datetime import datetime

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.slurm


def test_the_simulated_campaign_matches_the_real_slurm_run(slurm_cluster, tmp_path):
    from campaign_validation import validate

    validation = validate(tmp_path, seed=0)
    print("\n".join(validation.table()))
    real = validation.real
    assert 40 <= len(validation.stages) <= 80 and 2 <= validation.slots <= 4
    # the run exercised what it is meant to: in-job retries, a deterministic failure, blocked dependents
    assert real.retried and real.of("failed") and real.of("blocked") and len(real.of("done")) > 30
    assert validation.problems() == []


def _job(cluster, job_id: str) -> dict[str, str]:
    text = cluster.run("scontrol", "show", "job", "-o", job_id).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def _priority(cluster, job_id: str) -> int:
    return int(cluster.run("squeue", "-h", "-j", job_id, "-o", "%Q").stdout.split()[0])


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return value


def test_a_requeued_job_keeps_its_priority_and_waits_slurms_begin_time(slurm_cluster, tmp_path):
    """bench/campaign_model.py: a requeue keeps the job's place in the queue, after cred_expire + 1 s."""
    cluster = slurm_cluster
    config = cluster.run("scontrol", "show", "config").stdout
    cred_expire = int(re.search(r"cred_expire=(\d+)", config).group(1)) if "cred_expire=" in config else 120
    cpus = int(cluster.run("sinfo", "-h", "-o", "%c").stdout.split()[0].rstrip("+"))

    def submit(*args: str) -> str:
        return cluster.run("sbatch", "--parsable", "-o", "/dev/null", *args).stdout.strip().split(";")[0]

    jobs = []
    try:
        requeued = submit("--requeue", "--wrap", 'if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then exit 0; fi; sleep 300')
        jobs.append(requeued)
        jobs += [submit("--wrap", "sleep 60") for _ in range(cpus - 1)]  # every other CPU busy
        _wait(lambda: all(_job(cluster, j)["JobState"] == "RUNNING" for j in jobs), 60, "the first jobs to run")
        later = submit("--wrap", "sleep 60")  # submitted after: a lower priority, pending for want of a CPU
        jobs.append(later)
        before = _priority(cluster, requeued)
        # SLURM orders pending jobs by priority, then by job id (the earlier submission first)
        assert (-before, int(requeued)) < (-_priority(cluster, later), int(later))
        asked = datetime.now().replace(microsecond=0)
        cluster.run("scontrol", "requeue", requeued)
        state = _wait(lambda: (j := _job(cluster, requeued))["JobState"] == "PENDING" and j, 30, "the requeue")
        assert state["Reason"] == "BeginTime" and _priority(cluster, requeued) == before
        eligible = datetime.fromisoformat(state["EligibleTime"])
        assert cred_expire <= (eligible - asked).total_seconds() <= cred_expire + 3
        # meanwhile its CPU goes to the job behind it, which was submitted later
        _wait(lambda: _job(cluster, later)["JobState"] == "RUNNING", 30, "the later job to take the CPU")
        assert datetime.now() < eligible
    finally:
        cluster.run("scancel", *jobs, check=False)


def test_a_node_failure_requeues_the_job_unless_requeue_is_off(slurm_cluster):
    """bench/campaign_model.py's ``node_requeue``: the cluster's JobRequeue (or the job's --requeue) decides."""
    cluster = slurm_cluster
    assert re.search(r"JobRequeue\s*=\s*1", cluster.run("scontrol", "show", "config").stdout)
    node = cluster.run("sinfo", "-h", "-o", "%N").stdout.split()[0]
    jobs = [cluster.run("sbatch", "--parsable", "-o", "/dev/null", *flag, "--wrap", "sleep 300").stdout.strip()
            for flag in ([], ["--no-requeue"])]
    try:
        _wait(lambda: all(_job(cluster, j)["JobState"] == "RUNNING" for j in jobs), 60, "both jobs to run")
        cluster.run("scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=campaign-model-test")
        by_default, without = _wait(lambda: (states := [_job(cluster, j) for j in jobs])[1]["JobState"] == "NODE_FAIL"
                                    and states, 30, "the node failure")
        assert by_default["JobState"] == "PENDING" and by_default["Restarts"] == "1"  # requeued by SLURM
        assert without["JobState"] == "NODE_FAIL"  # ended: the stage would fail NodeFailure
    finally:
        cluster.run("scancel", *jobs, check=False)
        cluster.run("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
        _wait(lambda: cluster.run("sinfo", "-h", "-o", "%t").stdout.split()[0] in ("idle", "mix", "alloc"), 60,
              "the node back in service")
