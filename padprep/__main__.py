"""The ``padprep`` command (and ``python -m padprep``).

A ``padprep build`` gets its pad process (``padproc.fork_early``) before the CLI's imports (typer,
rich) and argument parsing: on a small build that process's torch import is the longest path.
"""

from __future__ import annotations

import sys


def main() -> None:
    from padprep.run.padproc import fork_early

    fork_early(sys.argv[1:])
    from padprep.cli import run

    run()


if __name__ == "__main__":
    main()
