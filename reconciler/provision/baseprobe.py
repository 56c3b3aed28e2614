"""A base image looked at in this process, without running qemu-img: what it is, and whether a QEMU writes it.

Why: a start that creates an overlay used to run qemu-img twice (`info` on the base at plan time, then
`create`); a process of qemu-img costs more than everything else the creation adds. Most bases are
decided from their first bytes, as qemu-img's own probe decides them:

- qcow2 (the magic, version 2 or 3, no encryption, no backing file of its own, no incompatible feature
  such as an external data file): format and virtual size from the header;
- raw: a file that starts with none of the signatures of the other formats QEMU probes, whose name does
  not end in .dmg and whose first byte could not begin a text descriptor (vmdk's, cloop's); its size is
  the file's. A file that might be anything else is left to qemu-img (None: undecided).

Whether a QEMU writes the base is asked of the kernel: every QEMU that opens an image for writing holds
a shared lock on byte 100 + the write permission's bit (1) of the file, QEMU's image locking
(block/file-posix.c, since QEMU 2.10). That test is cheap, so it is made again just before an overlay is
created: a base that became written between the plan and the start is refused then, too.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_HEADER = struct.Struct(">4sIQIIQI")  # magic, version, backing offset, backing size, cluster bits,
#                                             size, crypt method
_OTHER_SIGNATURES = (b"KDMV", b"COWD", b"conectix", b"vhdxfile", b"QED\0", b"LUKS\xba\xbe",
                     b"WithoutFreeSpace", b"WithouFreSpacExt", b"Bochs Virtual HD Image")
_VDI_SIGNATURE = (64, b"\x7f\x10\xda\xbe")  # at offset 64, little-endian 0xbeda107f
_TEXT_START = frozenset(b"# \t\r\nv")  # a vmdk descriptor (comments, blanks, version=) or cloop's script
_HEAD = 512

_QEMU_WRITE_LOCK_BYTE = 101  # 100 (QEMU's permission bytes) + 1 (BLK_PERM_WRITE is bit 1)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86_64 / aarch64: type, whence, start, len, pid


class BaseUnusable(Exception):
    """The base cannot be used: `detail` says why (ImageError's words)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def written_by_qemu(fd: int) -> bool:
    """Whether some process holds QEMU's write-permission lock on the open file `fd` (F_OFD_GETLK: asks,
    takes nothing)."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _QEMU_WRITE_LOCK_BYTE, 1, 0)
    held = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query))
    return bool(held[0] != fcntl.F_UNLCK)


def probe(path: str) -> tuple[str, int] | None:
    """(format, virtual size in bytes) of the base at `path` when its first bytes decide it; None when
    qemu-img must. BaseUnusable when it cannot be read, is not a regular file or a QEMU writes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise BaseUnusable(f"cannot read the base image: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None  # a block device, say: qemu-img knows its size
        try:
            written = written_by_qemu(fd)
        except OSError:  # a filesystem without OFD locks (some network ones): qemu-img decides
            return None
        if written:
            raise BaseUnusable(WRITTEN)
        head = os.pread(fd, _HEAD, 0)
    except OSError as err:
        raise BaseUnusable(f"cannot read the base image: {err.strerror or err}") from None
    finally:
        os.close(fd)
    return _decide(path, head, st.st_size)


WRITTEN = ("is being written by a running QEMU; a base image must not be written (stop its writer, "
           "or copy it)")


def _decide(path: str, head: bytes, file_size: int) -> tuple[str, int] | None:
    if head.startswith(QCOW2_MAGIC):
        if len(head) < _QCOW2_HEADER.size:
            return None
        _, version, backing, _, cluster_bits, size, crypt = _QCOW2_HEADER.unpack_from(head)
        # Version 3's incompatible features (an external data file, a dirty or corrupt image, ...).
        incompatible = int.from_bytes(head[72:80], "big") if version == 3 else 0
        if version in (2, 3) and backing == 0 and crypt == 0 and 9 <= cluster_bits <= 21 \
                and incompatible == 0:
            return "qcow2", size
        return None  # a backing chain, a data file, encryption, qcow version 1: qemu-img looks into it
    if len(head) < _HEAD or path.endswith(".dmg") or head[0] in _TEXT_START:
        return None
    offset, vdi = _VDI_SIGNATURE
    if head.startswith(_OTHER_SIGNATURES) or head[offset:offset + len(vdi)] == vdi:
        return None
    return "raw", file_size
