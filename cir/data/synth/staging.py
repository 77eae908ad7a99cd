"""Atomic replacement of a whole folder: write under a hidden staging name, rename into place at the end.

An interrupted run leaves no folder that looks complete; a later run removes what killed runs left behind.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ...errors import CirError

logger = logging.getLogger(__name__)


@contextmanager
def staged_folder(out: Path, is_ours: Callable[[Path], bool]) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it replaces `out` (if `is_ours(out)` or empty)."""
    _check_replaceable(out, is_ours)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        _swap_in(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _check_replaceable(out: Path, is_ours: Callable[[Path], bool]) -> None:
    """Refuse to overwrite a folder that is neither empty nor ours (it may be the user's data)."""
    if out.exists() and not out.is_dir():
        raise CirError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not is_ours(out):
        raise CirError(f"{out} is not empty and was not written by cir; choose another --out or empty it")


def _remove_stale_staging(out: Path) -> None:
    """Delete staging and retired folders of `out` left by runs that were killed (their process is gone)."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, _, pid = path.name[len(out.name) + 2:].rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and not _process_alive(int(pid)):
            logger.info("removing %s, left by an interrupted run", path)
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return True


def _swap_in(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    retired = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired)
