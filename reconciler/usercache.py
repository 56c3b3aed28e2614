"""Entries of the user's cache ($XDG_CACHE_HOME/reconciler, else ~/.cache/reconciler): marshalled values,
each file headed by the full key it was made for.

A lookup reads one file named after a CRC of the key and uses it only if the file starts with that exact
key (a name shared by chance, another Python, a changed input: a miss); a file that does not load is a
miss too. A store is atomic (a temporary file renamed over the entry) and never fails the caller. The
compiled schema check (manifest.schema) lives here, and, as `Table`s (a dict in one entry, saved by the
CLI when a run added to it), the dataclass methods' code (classcode) and the regular expressions' code
(regexcode). Imported by `reconciler/__init__`: it imports nothing heavy.
"""

from __future__ import annotations

import binascii
import contextlib
import marshal
import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def directory() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "reconciler")


def entry_path(prefix: str, key: bytes) -> str:
    return os.path.join(directory(), f"{prefix}-{binascii.crc32(key):08x}.marshal")


def load(prefix: str, key: bytes) -> Any | None:
    """The value stored under `key`, or None (absent, another key's, unreadable)."""
    with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
        with open(entry_path(prefix, key), "rb") as f:
            data = f.read()
        if data.startswith(key):
            return marshal.loads(data[len(key):])
    return None


def store(prefix: str, key: bytes, value: Any) -> None:
    """Store `value` (marshallable) under `key`, atomically; errors are ignored (a cache, not a record)."""
    path = entry_path(prefix, key)
    with contextlib.suppress(OSError, ValueError):
        data = key + marshal.dumps(value)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{os.urandom(6).hex()}.tmp"  # no tempfile import (3 ms with shutil)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class Table(Generic[K, V]):
    """A dict kept in one cache entry: `load` once, `get` and `put` as the run goes, `save` on the way out
    (written only when the run put something new; past `max_entries`, only what this run used is kept,
    so entries of old versions do not pile up). A loaded item that `valid` refuses is dropped."""

    def __init__(self, prefix: str, key: bytes, valid: Callable[[Any, Any], bool], max_entries: int) -> None:
        self.prefix, self.key, self.valid, self.max_entries = prefix, key, valid, max_entries
        self.entries: dict[K, V] = {}
        self.used: set[K] = set()
        self.added = False  # whether this run put an entry the cache did not have

    def load(self) -> None:
        table = load(self.prefix, self.key)
        if isinstance(table, dict):
            self.entries.update({k: v for k, v in table.items() if self.valid(k, v)})

    def get(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.used.add(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.entries[key] = value
        self.used.add(key)
        self.added = True

    def save(self) -> None:
        if not self.added:
            return
        entries = self.entries
        if len(entries) > self.max_entries:
            entries = {k: entries[k] for k in self.used}
        store(self.prefix, self.key, entries)
