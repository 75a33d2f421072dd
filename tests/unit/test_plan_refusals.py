"""What ``plan`` (and every command that validates a sweep) refuses before planning: a device the
throughput table cannot name (issue 25), fractions that leave no weight of the network and IMP
chains of absurd length."""
from __future__ import annotations

import pytest
from conftest import ROOT
from test_cli_errors import _assert_clean_error, run_cli

from orchestrator.planning import gpu_hours

DIGITS = ROOT / "sweeps" / "digits.yaml"


# --------------------------------------------------------------------------- --gpu


@pytest.mark.parametrize("device, needles", [
    ("TPUv9", ["--gpu: 'TPUv9' is not a device", "cpu-1thread", "H100", "cpu-<N>thread"]),
    ("", ["--gpu: '' is not a device"]),
    ("H10", ["did you mean H100?"]),
    ("h100", ["did you mean H100?"]),
    ("cpu-0thread", ["--gpu: 'cpu-0thread' is not a device"]),
])
def test_an_unknown_device_is_refused_listing_the_known_ones(device, needles):
    result = run_cli("plan", DIGITS, "--gpu", device)
    _assert_clean_error(result, *needles)
    assert result.stdout == ""


@pytest.mark.parametrize("device, shown", [
    ("cpu-1thread", "CPU-hours on cpu-1thread: "),  # measured
    ("H100", "GPU-hours: unknown (no measured throughput for small_cnn on digits on H100)"),  # a short name
    ("A10G", "GPU-hours: unknown (no measured throughput for small_cnn on digits on A10G)"),
    ("cpu-16thread", "GPU-hours: unknown (no measured throughput for small_cnn on digits on cpu-16thread)"),
])
def test_a_device_the_table_holds_or_could_hold_is_accepted(device, shown):
    result = run_cli("plan", DIGITS, "--gpu", device)
    assert result.returncode == 0 and shown in result.stdout, result.stderr


def test_a_name_measured_in_the_table_is_known_whatever_it_is():
    """``bench/throughput_table.py`` records a GPU without a short name under its full name."""
    table = [{"arch": "small_cnn", "dataset": "digits", "device": "Tesla Z9000", "samples_per_s": 1.0}]
    assert gpu_hours.check_device("Tesla Z9000", table) == "Tesla Z9000"
    with pytest.raises(ValueError, match="did you mean Tesla Z9000"):
        gpu_hours.check_device("Tesla Z900", table)

