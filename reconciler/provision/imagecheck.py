"""What a node says about a disk image the plan would create: the answer of `Node.check_images`.

The plan lists every disk it creates, with its size and base, and refuses one whose base is missing or
unusable, or whose filesystem lacks the room. Only the disks about to be created are asked about (a
missing file whose entry has `size` or `baseImage`), so a plan over thousands of instances whose disks
exist opens no image at all. This module holds only the question's and the answer's types (no I/O),
so the pure planner and the node interface can share them.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import Disk
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ImageQuery(Value):
    """A disk to be created at `path`: an overlay on `base` and/or a blank disk of `size` bytes."""

    path: str
    base: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ImageCheck(Value):
    """The node's answer. `error` (one line naming the file) when the disk cannot be created there."""

    path: str
    error: str = ""
    base_format: str | None = None  # raw or qcow2
    base_size: int | None = None  # the base's virtual size, bytes
    device: int = 0  # st_dev of the target directory: disks on one filesystem share its free space
    free: int = 0  # bytes an unprivileged writer may still use there


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DiskRequest(Value):
    """A provisioned disk as a node creates or grows it (Node.create_disk, Node.grow_disk)."""

    path: str
    format: str  # raw or qcow2: of the new image (an overlay is always qcow2)
    base: str | None = None
    size: int | None = None


def request_of(disk: Disk) -> DiskRequest:
    return DiskRequest(disk.path, disk.format.value, disk.base_image, disk.size)
