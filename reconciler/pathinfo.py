"""What a node says about a path: the answer of `Node.check_paths`, as plain values.

The plan checks that the files, binaries and bridges its starts need exist on their nodes
(`planner.needs`). The question goes to the node as a list of paths and the answer comes back as one
`PathInfo` each, so a remote node can answer all of them in one round trip; this module holds only the
answer's types (no I/O), so the pure check and the node interface can share them.

A query without a `/` is a command name: the node looks it up in its PATH, as the launch does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from reconciler.values import Value


class PathKind(enum.StrEnum):
    """What is at a path, after following symlinks (a dangling symlink is MISSING)."""

    MISSING = "missing"
    FILE = "file"
    DIRECTORY = "directory"
    BLOCK_DEVICE = "block device"
    OTHER = "other"  # a FIFO, socket or character device
    ERROR = "error"  # it could not be looked at (e.g. permission denied on a parent directory)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class PathInfo(Value):
    """What is at one path on a node."""

    kind: PathKind
    executable: bool = False  # a regular file this process may execute
    resolved: str | None = None  # for a command name: where PATH found it
    error: str = ""  # for ERROR: the reason, e.g. "Permission denied"


MISSING = PathInfo(PathKind.MISSING)
