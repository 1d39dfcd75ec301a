"""The ``amplint`` console script.

Editors and pre-commit call ``amplint check [--force-exclude] FILES``, most often on files
with nothing to report, where starting up is most of the run: click alone takes longer to
import than amplint's whole verdict on such a file. That plain form is parsed here
(:func:`amplint.command.quick_options`) and never imports click; every other command line
goes to the click command line, :mod:`amplint.cli`, which also parses the plain form the
same way (a test runs both on each).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(args: Sequence[str] | None = None) -> None:
    # On Windows the shell leaves ``*.py`` and ``~`` to the program: click expands them
    # (when it reads sys.argv itself), so every command line there is click's.
    if os.name != "nt":
        from amplint.command import guarded, lint, quick_options

        options = quick_options(list(sys.argv[1:] if args is None else args))
        if options is not None:
            sys.exit(guarded(lambda: lint(options)))
    from amplint.cli import cli

    cli.main(None if args is None else list(args))
