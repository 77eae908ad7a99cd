"""The rich consoles the CLI writes to: results on stdout, errors and progress on stderr.

Piped output (a log, a CI job) gets a wide fixed width so that result tables are never cut to 80 columns.
"""

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True)
