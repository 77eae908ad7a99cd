"""The rich consoles the CLI writes to: results on stdout, errors and progress on stderr."""

from rich.console import Console

console = Console()
error_console = Console(stderr=True)
