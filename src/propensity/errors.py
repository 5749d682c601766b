"""Errors that end a command, each with the exit code the command line documents.

The one table of exit codes: every expected failure is a `PropensityError` subclass that names
its code (config errors in `config`, storage errors in `storage`); `exit_code_of` is how the
command line and the daily cycle turn any error into a code.

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
| 13 | lease held: another run of the same stage and day is running (names it); or this run's  |
|    | lease was taken over while it ran, so it stopped before publishing                      |
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
    LEASE_HELD = 13


class PropensityError(Exception):
    """An expected way for a command to fail; the message is shown without a traceback."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(PropensityError):
    exit_code = ExitCode.USAGE


class MissingInput(PropensityError):
    exit_code = ExitCode.MISSING_INPUT


class BadInput(PropensityError):
    exit_code = ExitCode.BAD_INPUT


class DriftAlert(PropensityError):
    exit_code = ExitCode.DRIFT_ALERT


class DataQualityAlert(PropensityError):
    """Broken input on D: named apart from drift, under drift's exit code (11)."""

    exit_code = ExitCode.DRIFT_ALERT


class QualityAlert(PropensityError):
    exit_code = ExitCode.QUALITY_ALERT


class LeaseHeld(PropensityError):
    """Another run holds the lease on this stage's output (or took this run's over): nothing of
    this run was published."""

    exit_code = ExitCode.LEASE_HELD


def exit_code_of(err: BaseException) -> ExitCode:
    """The documented exit code of an error: its own for expected ones, else 1 (a bug)."""
    return err.exit_code if isinstance(err, PropensityError) else ExitCode.FAILURE
