"""The local SLURM cluster of tests/cluster/ behaves like a real one: what the SLURM backend
relies on (sbatch, arrays with throttles, dependencies, requeue, scancel, sacct) works, with and
without accounting."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "slurm.sh"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll until predicate() returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


@pytest.fixture
def slurm(slurm_cluster):
    """The cluster, plus `submit(...)` that remembers job ids and cancels leftovers afterwards."""
    submitted: list[str] = []

    def submit(*args) -> str:
        out = slurm_cluster.run("sbatch", "--parsable", *args).stdout.strip()
        job_id = out.split(";")[0]
        submitted.append(job_id)
        return job_id

    slurm_cluster.submit = submit
    yield slurm_cluster
    if submitted:
        slurm_cluster.run("scancel", *submitted, check=False)
    del slurm_cluster.submit


def sacct_states(cluster, job_id: str, *extra: str) -> dict[str, str]:
    """JobID -> State from the accounting database (array tasks as ID_TASK)."""
    out = cluster.run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State", *extra).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def job_field(cluster, job_id: str, field: str) -> str | None:
    """A field of `scontrol show job` (works without accounting)."""
    proc = cluster.run("scontrol", "show", "job", "-o", job_id, check=False)
    match = re.search(rf"\b{field}=(\S*)", proc.stdout)
    return match.group(1) if match else None


def finished_in_sacct(cluster, job_id, state="COMPLETED", count=1):
    states = sacct_states(cluster, job_id)
    return states if len(states) == count and all(s.startswith(state) for s in states.values()) else None


def test_sbatch_wrap_completes_and_is_accounted(slurm, tmp_path):
    out = tmp_path / "out.txt"
    job = slurm.submit("-o", out, "--wrap", "echo hello from $SLURM_JOB_ID")
    wait_for(lambda: finished_in_sacct(slurm, job), 30, f"job {job} COMPLETED in sacct")
    assert out.read_text().strip() == f"hello from {job}"
    exit_code = slurm.run("sacct", "-j", job, "-X", "-n", "-P", "-o", "ExitCode").stdout.strip()
    assert exit_code == "0:0"


def test_array_with_throttle_completes(slurm, tmp_path):
    script = f'date +%s.%N > {tmp_path}/start_$SLURM_ARRAY_TASK_ID; sleep 1; date +%s.%N > {tmp_path}/end_$SLURM_ARRAY_TASK_ID'
    job = slurm.submit("--array=0-4%2", "-o", tmp_path / "%A_%a.out", "--wrap", script)
    assert job_field(slurm, job, "ArrayTaskThrottle") == "2"

    def held_by_throttle():
        reasons = slurm.run("squeue", "-h", "-j", job, "-t", "PENDING", "-o", "%r").stdout.split()
        return "JobArrayTaskLimit" in reasons

    wait_for(held_by_throttle, 10, "pending tasks held by the %2 throttle (Reason=JobArrayTaskLimit)")
    states = wait_for(lambda: finished_in_sacct(slurm, job, count=5), 60, "5 array tasks COMPLETED")
    assert sorted(states) == [f"{job}_{i}" for i in range(5)]
    spans = [
        (float((tmp_path / f"start_{i}").read_text()), float((tmp_path / f"end_{i}").read_text()))
        for i in range(5)
    ]
    most_at_once = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert 1 <= most_at_once <= 2, spans


def test_dependency_afterok_waits_for_the_whole_array(slurm, tmp_path):
    array = slurm.submit(
        "--array=0-2", "-o", "/dev/null",
        "--wrap", f"sleep 1.5; date +%s.%N > {tmp_path}/end_$SLURM_ARRAY_TASK_ID",
    )
    after = slurm.submit(
        f"--dependency=afterok:{array}", "-o", "/dev/null",
        "--wrap", f"date +%s.%N > {tmp_path}/after_start",
    )
    assert job_field(slurm, after, "JobState") == "PENDING"
    assert job_field(slurm, after, "Reason") == "Dependency"
    wait_for(lambda: finished_in_sacct(slurm, after), 60, f"dependent job {after} COMPLETED")
    # sacct records arrive asynchronously (slurmctld -> slurmdbd), not necessarily in order
    wait_for(lambda: finished_in_sacct(slurm, array, count=3), 30, f"array {array} COMPLETED in sacct")
    array_end = max(float((tmp_path / f"end_{i}").read_text()) for i in range(3))
    assert float((tmp_path / "after_start").read_text()) >= array_end


def test_requeue_of_a_running_job_runs_it_again(slurm, tmp_path):
    out = tmp_path / "out.txt"
    script = (
        'echo "run restart=${SLURM_RESTART_COUNT:-0}"; '
        'if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo finished; exit 0; fi; sleep 300'
    )
    job = slurm.submit("--requeue", "--open-mode=append", "-o", out, "--wrap", script)
    wait_for(lambda: out.exists() and "restart=0" in out.read_text(), 30, "the first run")
    slurm.run("scontrol", "requeue", job)
    wait_for(lambda: finished_in_sacct(slurm, job), 60, f"requeued job {job} COMPLETED")
    lines = out.read_text().splitlines()
    assert [line for line in lines if not line.startswith("slurmstepd")] == [
        "run restart=0", "run restart=1", "finished",
    ]
    # slurmstepd appends its own notice of the interruption to the same file
    assert any("DUE TO JOB REQUEUE" in line for line in lines), lines
    assert job_field(slurm, job, "Restarts") == "1"
    # the accounting database keeps the interrupted run too
    history = slurm.run("sacct", "-j", job, "-X", "-D", "-n", "-P", "-o", "State").stdout.split()
    assert history == ["REQUEUED", "COMPLETED"]


def test_scancel_is_accounted_as_cancelled(slurm):
    job = slurm.submit("-o", "/dev/null", "--wrap", "sleep 300")
    wait_for(lambda: job_field(slurm, job, "JobState") == "RUNNING", 30, f"job {job} RUNNING")
    slurm.run("scancel", job)
    wait_for(lambda: finished_in_sacct(slurm, job, "CANCELLED"), 30, f"job {job} CANCELLED in sacct")
    assert job_field(slurm, job, "JobState") == "CANCELLED"


def test_without_accounting_sacct_fails_but_the_controller_reports_states(slurm):
    with slurm.accounting(False):
        sacct = slurm.run("sacct", "-n", check=False)
        assert sacct.returncode != 0
        assert "accounting storage is disabled" in (sacct.stdout + sacct.stderr).lower()

        ok = slurm.submit("-o", "/dev/null", "--wrap", "true")
        failing = slurm.submit("-o", "/dev/null", "--wrap", "exit 3")
        cancelled = slurm.submit("-o", "/dev/null", "--wrap", "sleep 300")
        wait_for(lambda: job_field(slurm, cancelled, "JobState") == "RUNNING", 30, "the sleeper RUNNING")
        slurm.run("scancel", cancelled)

        expected = {ok: "COMPLETED", failing: "FAILED", cancelled: "CANCELLED"}

        def squeue_all():
            out = slurm.run("squeue", "-t", "all", "-h", "-o", "%i %T", "-j", ",".join(expected)).stdout
            states = dict(line.split() for line in out.splitlines())
            return states if states == expected else None

        wait_for(squeue_all, 30, "the three end states in squeue -t all")
        assert job_field(slurm, ok, "ExitCode") == "0:0"
        assert job_field(slurm, failing, "ExitCode") == "3:0"
        assert job_field(slurm, cancelled, "JobState") == "CANCELLED"
    assert slurm.accounting_enabled
    assert slurm.run("sacct", "-n", "-X", "-j", ok, check=False).returncode == 0


def test_max_array_size_is_the_real_limit(slurm):
    """Array indexes must stay below MaxArraySize. (One task at the top index, not a whole array:
    every task counts against MaxJobCount for MinJobAge after it ends.)"""
    top = slurm.max_array_size - 1
    job = slurm.submit("--hold", f"--array={top}", "-o", "/dev/null", "--wrap", "true")
    assert job_field(slurm, job, "ArrayTaskId") == str(top)
    slurm.run("scancel", job)
    too_big = slurm.run("sbatch", "--hold", f"--array={top + 1}", "--wrap", "true", check=False)
    assert too_big.returncode != 0
    assert "invalid job array specification" in too_big.stderr.lower()


def _listening_ports() -> dict[int, set[str]]:
    """TCP port -> local addresses listening on it (IPv4 and IPv6)."""
    ports: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                address, port = fields[1].rsplit(":", 1)
                ports.setdefault(int(port, 16), set()).add(address)
    return ports


def test_start_again_is_a_fast_no_op_and_everything_listens_on_loopback(slurm_cluster):
    def pids():
        out = subprocess.run(["bash", SCRIPT, "status"], env=slurm_cluster.env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return re.findall(r"^(\S+)\s+running, pid (\d+)", out.stdout, re.M)

    before = pids()
    assert [name for name, _ in before] == ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]
    started = time.monotonic()
    proc = subprocess.run(["bash", SCRIPT, "start"], env=slurm_cluster.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 5
    assert f"export SLURM_CONF={slurm_cluster.conf}" in proc.stdout
    assert pids() == before

    conf = slurm_cluster.conf.read_text()
    ctld_port = int(re.search(r"^SlurmctldPort=(\d+)", conf, re.M).group(1))
    listening = _listening_ports()
    for port in range(ctld_port, ctld_port + 4):  # slurmctld, slurmd, slurmdbd, mariadbd
        assert listening.get(port) == {"0100007F"}, (port, listening.get(port))
