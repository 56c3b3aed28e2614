"""The QEMU version of a binary, remembered across runs in the node's state directory.

Every start records the QEMU version, and asking QEMU (`qemu-system-x86_64 --version`) costs a process
start on every command run. The answer only changes when the binary does, so it is kept in
`<stateDir>/qemu-version.json` (0600, written atomically), keyed by the binary's resolved path and the
stat facts a replaced or rewritten file changes: device, inode, size, mtime and ctime (ctime cannot be set
back by `touch`). Any difference is a miss; an unreadable or malformed cache is a miss too, and is
rewritten on the next store. The cache lives on the node, beside the instances that use the binary (a
remote node will have its own).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass

from reconciler import statedir
from reconciler.errors import StateDirError
from reconciler.values import Value

CACHE_FILE = "qemu-version.json"
FORMAT = 1
MAX_VERSION_LEN = 100
_KEYS = ("dev", "ino", "size", "mtime_ns", "ctime_ns")


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class BinaryKey(Value):
    """What identifies one binary file's contents without reading them."""

    path: str  # resolved (symlinks followed)
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str) -> BinaryKey:
        """The key of the file `path` resolves to; OSError when it does not exist."""
        real = os.path.realpath(path)
        st = os.stat(real)
        return cls(real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def cache_path(state_dir: str) -> str:
    return os.path.join(state_dir, CACHE_FILE)


def _entries(path: str) -> dict[str, object]:
    """The cache's entries by binary path; {} when the file is missing, unreadable or malformed."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return {}
    binaries = data.get("binaries") if isinstance(data, dict) and data.get("format") == FORMAT else None
    return binaries if isinstance(binaries, dict) else {}


def lookup(path: str, key: BinaryKey) -> str | None:
    """The cached version for exactly this binary file, or None (a miss)."""
    entry = _entries(path).get(key.path)
    if not isinstance(entry, dict):
        return None
    if any(type(entry.get(k)) is not int or entry.get(k) != getattr(key, k) for k in _KEYS):
        return None
    version = entry.get("version")
    if not isinstance(version, str) or not version or len(version) > MAX_VERSION_LEN \
            or not version.isprintable():
        return None
    return version


def store(path: str, key: BinaryKey, version: str) -> None:
    """Remember `version` for this binary file (other binaries' entries stay). Best effort: a cache that
    cannot be written only means asking QEMU again next time."""
    entries = {k: v for k, v in _entries(path).items() if isinstance(v, dict)}
    fields = asdict(key)
    del fields["path"]
    entries[key.path] = {**fields, "version": version}
    data = json.dumps({"format": FORMAT, "binaries": entries}, indent=1, sort_keys=True) + "\n"
    statedir.remove_dead_temps(os.path.dirname(path))  # of a writer killed mid-write before us
    with contextlib.suppress(StateDirError):
        statedir.atomic_write(path, data.encode())
