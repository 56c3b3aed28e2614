"""Find a command on PATH, as `shutil.which` does on POSIX, without importing shutil.

A start, a stop and a plan all resolve the QEMU binary's bare name. shutil's import (with bz2, lzma and
zlib) costs 2-5 ms of such a run, more than the lookup itself; this is the same lookup on its own.
"""

from __future__ import annotations

import os


def which(name: str, path: str | None = None) -> str | None:
    """The first executable regular file `name` on `path` (default: $PATH, else os.defpath), or None.
    A name with a `/` is checked as it is."""
    if os.sep in name:
        return name if _runnable(name) else None
    search = path if path is not None else os.environ.get("PATH") or os.defpath
    seen = set()
    for directory in search.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        if _runnable(candidate):
            return candidate
    return None


def _runnable(path: str) -> bool:
    try:
        return os.path.exists(path) and os.access(path, os.X_OK) and not os.path.isdir(path)
    except ValueError:  # a NUL byte
        return False
