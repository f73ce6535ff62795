"""Crash-safe file writes shared by the run folder, plots and the CLI."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

_UMASK = os.umask(0)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash leaves the old file or the new one, never half of one. The file gets the usual
    mode (0666 less the umask; ``mkstemp`` alone makes 0600). Returns ``path``.
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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
