"""The failure classifier and the shared ``retries`` setting."""
from __future__ import annotations

import signal

import pytest
from pydantic import ValidationError

from orchestrator.backends import BACKENDS, settings_model
from orchestrator.backends.failure_classes import (
    DETERMINISTIC,
    INFRASTRUCTURE,
    classify,
    describe,
    failure_class,
    should_retry,
)


def test_a_process_killed_by_a_signal_is_an_infrastructure_failure():
    for failure in (classify(exit_code=-signal.SIGKILL), classify(term_signal=signal.SIGKILL)):
        assert failure.failure_class == INFRASTRUCTURE and failure.error_class == "WorkerDied"
        assert "SIGKILL" in failure.message and failure.retryable
    assert classify(exit_code=1).failure_class == INFRASTRUCTURE  # died without a record of raising


def test_an_exception_of_the_stage_is_deterministic_whatever_the_exit_status():
    record = {"error_class": "OutOfMemoryError", "message": "CUDA out of memory"}
    failure = classify(exit_code=1, error_record=record)
    assert (failure.failure_class, failure.error_class, failure.message) == (DETERMINISTIC, "OutOfMemoryError",
                                                                             "CUDA out of memory")
    assert not failure.retryable
    assert classify(reported=("ValueError", "bad data")).failure_class == DETERMINISTIC
    assert classify(reported=("WorkerCrashedError", "lost")).failure_class == INFRASTRUCTURE


def test_retries_are_bounded_and_only_for_infrastructure():
    died, raised = classify(exit_code=-9), classify(reported=("ValueError", ""))
    assert [should_retry(died, used, 2) for used in range(4)] == [True, True, False, False]
    assert not should_retry(raised, 0, 2)
    assert not should_retry(died, 0, 0)


def test_recorded_error_classes_read_back_as_failure_classes():
    assert failure_class("WorkerDied") == INFRASTRUCTURE
    assert failure_class("ZeroDivisionError") == DETERMINISTIC
    assert failure_class("Interrupted") is None and failure_class(None) is None
    assert describe("WorkerDied", 3) == "WorkerDied (infrastructure), attempt 3"


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_has_a_strict_bounded_retries_setting_defaulting_to_2(name):
    model = settings_model(name)
    assert model().retries == 2 and model(retries=0).retries == 0
    for bad in (-1, 11, True, "2", 1.5):
        with pytest.raises(ValidationError):
            model(retries=bad)
