"""The one exception type that reaches users as a one-line message (exit code 2)."""


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix, on one line."""
