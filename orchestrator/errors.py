"""Errors the command line turns into one clear message and an exit code."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one message, exit code 2, nothing written."""

    exit_code = 2


class SpecError(UserError):
    """A sweep file or override that does not validate.

    The message always names the file, the key path and what is allowed.
    """

    def __init__(self, source: str, key_path: str, problem: str):
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.key_path = key_path
        self.problem = problem


class WorkspaceBusy(Exception):
    """Another live launch/resume holds the workspace lock."""

    exit_code = 3


class EnvironmentProblem(Exception):
    """The system refused what a command must do (a file it may not move, an immutable folder): printed
    as one message naming the file and what to do, exit code 1."""

    exit_code = 1
