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



# --------------------------------------------------------------------------- fractions that leave no weight


@pytest.mark.parametrize("overrides, needles", [
    (["pruning.fractions=[1.0e-300]"], ["pruning.fractions[0]: 1e-300 leaves no weight", "16,272 prunable weights"]),
    (["pruning.rate=0.9", "pruning.fractions=[0.5, 1.0e-6]"], ["pruning.fractions[1]: 1e-06 leaves no weight",
                                                            "smallest meaningful fraction is 0.0001"]),
    # 1.3 weights by the product, but the 14th round at rate 0.5 removes the last one
    (["pruning.rate=0.5", "pruning.fractions=[8.0e-5]"], ["pruning.fractions[0]: 8e-05 leaves no weight",
                                                       "smallest meaningful fraction is 0.0001221"]),
    (["pruning.one_shot=true", "pruning.fractions=[1.0e-5]"], ["pruning.fractions[0]: 1e-05 leaves no weight",
                                                            "smallest meaningful fraction is 6.146e-05"]),
    # the layer-wise rule prunes the first convolution only: 1 x 16 x 3 x 3 weights
    (["pruning.layers=1", "pruning.fractions=[0.005]"], ["pruning.fractions[0]: 0.005 leaves no weight",
                                                        "144 prunable weights"]),
], ids=["1e-300", "rate-0.9", "rounds-remove-the-last", "one-shot", "layer-wise"])
def test_a_fraction_that_leaves_no_weight_is_refused_naming_the_smallest_meaningful_one(overrides, needles):
    result = run_cli("plan", DIGITS, *overrides)
    _assert_clean_error(result, "sweeps/digits.yaml: ", *needles)
    assert result.stdout == ""


@pytest.mark.parametrize("rate, one_shot", [(0.2, False), (0.9, False), (0.5, False), (0.2, True)])
def test_the_smallest_meaningful_fraction_is_accepted_and_the_next_one_down_refused(rate, one_shot):
    # (YAML reads a number in exponent notation only with a dot: 1.0e-30, not 1e-30)
    options = [f"pruning.rate={rate}", f"pruning.one_shot={str(one_shot).lower()}"]
    refused = run_cli("plan", DIGITS, *options, "pruning.fractions=[1.0e-30]")
    smallest = float(refused.stderr.rsplit("smallest meaningful fraction is ", 1)[1].split()[0].rstrip(";"))
    assert run_cli("plan", DIGITS, *options, f"pruning.fractions=[{smallest:.6e}]").returncode == 0
    below = smallest / 3 if one_shot else smallest * (1 - rate)  # one-shot keeps round(fraction x weights)
    assert run_cli("plan", DIGITS, *options, f"pruning.fractions=[{below:.6e}]").returncode == 2


def test_an_imp_chain_longer_than_the_bound_is_refused():
    result = run_cli("plan", DIGITS, "pruning.rate=0.001", "pruning.fractions=[0.5, 0.2]")
    _assert_clean_error(result, "pruning.fractions[1]: 0.2 takes 1,609 IMP rounds at rate 0.001",
                        "above the limit of 1,000")
