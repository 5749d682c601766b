"""Errors that end a command, each with the exit code the command line documents.

| code | meaning |
|------|---------|
| 0  | success |
| 1  | unexpected failure (a bug or an infrastructure error; see the log) |
| 2  | bad usage or invalid config (names the option, key or file at fault) |
| 3  | missing input: a partition or model the command needs is absent or incomplete |
| 4  | bad input: too many malformed records, a tampered model file, mixed model versions |
| 10 | gate rejected: the candidate model was not promoted (the champion is unchanged) |
| 11 | drift alert: a monitoring check failed and `--fail-on-drift` was given |
| 12 | quality alert: realised AUC dropped beyond the threshold (`--fail-on-drift`) |
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    MISSING_INPUT = 3
    BAD_INPUT = 4
    GATE_REJECTED = 10
    DRIFT_ALERT = 11
    QUALITY_ALERT = 12


class PropensityError(Exception):
    """An expected way for a command to fail; the message is shown without a traceback."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(PropensityError):
    exit_code = ExitCode.USAGE


class MissingInput(PropensityError):
    exit_code = ExitCode.MISSING_INPUT


class BadInput(PropensityError):
    exit_code = ExitCode.BAD_INPUT
