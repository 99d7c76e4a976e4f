"""One base for every failure a user can cause, carrying the exit code the CLI ends with.

The CLI catches ``PadprepError`` once and prints its message as one line; nothing else there
chooses an exit code. The codes (also in ``padprep/cli/__init__.py``'s docstring):

* ``EXIT_FAILED`` (1): the build or check failed (bad input, template error, verify breach);
* ``EXIT_USAGE`` (2): a usage error (bad option, missing file, output exists, missing extra);
* ``EXIT_HAZARD`` (3): ``--strict`` stopped on a preflight hazard;
* ``EXIT_INTERRUPTED`` (130): Ctrl-C or SIGTERM.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HAZARD = 3
EXIT_INTERRUPTED = 130


class PadprepError(Exception):
    """A failure with a one-line message (what was found, where, what to do) and an exit code.

    Args:
        message: the line printed after ``padprep: error:``.
        exit_code: overrides the class's ``exit_code`` for this one error.

    Example:
        >>> raise PadprepError("out/: not a padprep output", EXIT_USAGE)  # doctest: +SKIP
    """

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(PadprepError):
    """Something about how padprep was called (an option, a missing extra): exit 2."""

    exit_code = EXIT_USAGE


class BuildFailed(PadprepError):
    """The build stopped; the message is the one-line reason (exit 1 unless said otherwise)."""
