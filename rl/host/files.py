"""Crash-safe file writes shared by the run folder, the sweep report, plots, sinks and the CLI.

Every file a run or a sweep writes goes through here: it is written beside its target, synced
and renamed over it, so a crash (or Ctrl-C) leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *, replace: bool = True) -> Path:
    """``write(file)`` into a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash leaves the old file or the new one, never half of one. The file gets the usual
    mode (0666 less the umask; ``mkstemp`` alone makes 0600). With ``replace=False`` an existing
    ``path`` is never replaced: the new file is linked to the name (atomic, and refused with
    ``FileExistsError`` when the name is taken, even by a file that appeared meanwhile).
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            Path(tmp).unlink()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_path(path: str | os.PathLike[str], write: Callable[[str], object], *, sync_dir: bool = False) -> Path:
    """As :func:`atomic_write` for writers that need a file name (pyarrow, pandas' parquet):
    ``write(tmp_path)``, fsync, rename over ``path``; with ``sync_dir`` the rename is made
    durable too (the folder is synced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def write_json(
    path: str | os.PathLike[str], data: Any, default: Callable[[Any], Any] | None = None, *, replace: bool = True
) -> Path:
    """``data`` as indented JSON (with a final newline), written atomically; ``default`` as in
    ``json.dumps`` for values JSON does not know; ``replace=False``: never over an existing file
    (:func:`atomic_write`)."""
    text = json.dumps(data, indent=2, default=default) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode()), replace=replace)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or removal in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
