"""User-facing errors: the CLI turns these into a one-line message and exit code 2."""

from __future__ import annotations


class CirError(Exception):
    """A problem the user can fix (bad path, malformed file, unknown id); never a bug in cir."""


class DatasetNotFoundError(CirError):
    """A benchmark folder or file is missing."""


class FormatError(CirError):
    """A file exists but does not hold what its format promises; the message names the file and the entry."""


class UnknownIdError(CirError):
    """An image or query id that the benchmark or gallery does not know."""


class MissingDependencyError(CirError):
    """An optional backend is not installed; the message gives the pip command."""


def require(module: str, extra: str, package: str | None = None):
    """Import an optional backend lazily, or fail with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{package or module} is not installed: pip install 'cir[{extra}]'"
        ) from exc
