"""Errors that the command lines turn into one-line messages and exit codes."""


class UserError(Exception):
    """Bad input from the user: unknown name, missing file, invalid option (exit 2)."""

    exit_code = 2


class CheckFailed(Exception):
    """A check the user asked for did not pass, e.g. export parity (exit 1)."""

    exit_code = 1
