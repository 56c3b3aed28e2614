"""Disk images the reconciler creates, and the ownership records that decide what may be deleted.

A file that already existed is never ours: it is never written outside of QEMU and never deleted. An image
is ours only if we created it, and we remember exactly which file that was (device and inode, besides the
path). Deleting checks the file is still that one, a regular file and not a symlink, so a symlink or
another file swapped in at the path is refused, whatever the delete policy says.

Images are created with qemu-img (an argv, never a shell): into a temporary name in the target directory,
then hard-linked into place, which fails if anything appeared at the path meanwhile; nothing is ever
overwritten. Paths are absolute (the manifest requires it), so qemu-img never reads one as a protocol
prefix such as `json:`; commas and `=` in them are plain characters for `-b` and positional filenames.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import stat
import time
from dataclasses import dataclass

from reconciler import statedir
from reconciler.errors import ReconcilerError

QEMU_IMG = "qemu-img"
TIMEOUT = 30.0


class ImageFormat(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


@dataclass(eq=False)
class ImageError(ReconcilerError):
    """An image could not be inspected, created or deleted; `path` names the file."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"disk image {self.path}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    virtual_size: int  # bytes
    backing: str | None


@dataclass(frozen=True, slots=True)
class OwnedImage:
    """An image the reconciler created: the only kind it may ever delete."""

    path: str
    created_at: float
    device: int
    inode: int
    base: str | None = None  # the base image of an overlay
    size: int | None = None  # bytes, for a blank disk


async def _qemu_img(path: str, *args: str, timeout: float = TIMEOUT) -> str:
    """Run qemu-img with `args`; an ImageError names `path` (the image the user knows, not a temporary)."""
    try:
        proc = await asyncio.create_subprocess_exec(QEMU_IMG, *args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise ImageError(path, f"{QEMU_IMG} not found (Debian package qemu-utils)") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImageError(path, f"{QEMU_IMG} {args[0]} did not finish within {timeout:g}s") from None
    if proc.returncode != 0:
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        raise ImageError(path, lines[-1].strip() if lines else f"{QEMU_IMG} exited {proc.returncode}")
    return out.decode()


async def inspect(path: str) -> ImageInfo:
    """Format and virtual size of an image (qemu-img info; the image is opened read-only, shared)."""
    _absolute(path)
    raw = json.loads(await _qemu_img(path, "info", "--output=json", "-U", path))
    return ImageInfo(str(raw["format"]), int(raw["virtual-size"]), raw.get("backing-filename"))


async def check_base(path: str) -> ImageInfo:
    """A base image must be a readable raw or qcow2 file; ImageError says why it is not."""
    info = await inspect(path)
    if info.format not in (ImageFormat.RAW, ImageFormat.QCOW2):
        raise ImageError(path, f"a base image must be raw or qcow2, not {info.format}")
    return info


async def create_overlay(path: str, base: str, base_format: ImageFormat) -> OwnedImage:
    """A qcow2 overlay on `base` at `path`, which must not exist; `base` is never written."""
    _absolute(base)
    return await _create(path, ("-f", "qcow2", "-b", base, "-F", base_format.value), base=base)


async def create_blank(path: str, size: int, fmt: ImageFormat) -> OwnedImage:
    """A blank image of `size` bytes at `path`, which must not exist."""
    return await _create(path, ("-f", fmt.value), size=size)


async def _create(path: str, options: tuple[str, ...], *, base: str | None = None,
                  size: int | None = None) -> OwnedImage:
    _absolute(path)
    directory, name = os.path.split(path)
    if os.path.lexists(path):
        raise ImageError(path, "already exists; an existing file is never replaced")
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.creating")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        await _qemu_img(path, "create", "-q", *options, tmp, *([str(size)] if size is not None else []))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # fails if anything appeared at `path` meanwhile
        except FileExistsError:
            raise ImageError(path, "appeared while it was being created; left alone") from None
        st = os.lstat(path)
    except OSError as err:
        raise ImageError(path, f"cannot create: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return OwnedImage(path, time.time(), st.st_dev, st.st_ino, base=base, size=size)


def delete_owned(owned: OwnedImage) -> None:
    """Delete `owned` only if the path still is that very file (same device and inode, a regular file,
    not a symlink); otherwise ImageError and nothing is removed. A file already gone is fine."""
    try:
        st = os.lstat(owned.path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ImageError(owned.path, "is now a symlink, not the image the reconciler created; not deleted")
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (owned.device, owned.inode):
        raise ImageError(owned.path, "is no longer the file the reconciler created; not deleted")
    os.unlink(owned.path)


def free_bytes(directory: str) -> int:
    """Space an unprivileged writer may use on the filesystem of `directory`."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


# --- ownership records, in the node's state directory ---------------------------------------------


def owned_to_json(owned: OwnedImage) -> bytes:
    return json.dumps({"format_version": 1, "path": owned.path, "created_at": owned.created_at,
                       "device": owned.device, "inode": owned.inode, "base": owned.base,
                       "size": owned.size}, indent=1).encode()


def owned_from_json(data: bytes) -> OwnedImage:
    try:
        raw = json.loads(data)
        if raw.get("format_version") != 1:
            raise ValueError(f"unsupported format_version {raw.get('format_version')!r}")
        return OwnedImage(str(raw["path"]), float(raw["created_at"]), int(raw["device"]), int(raw["inode"]),
                          raw.get("base"), raw.get("size"))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ImageError("?", f"unreadable ownership record: {err}") from None


def write_owned(record_path: str, owned: OwnedImage) -> None:
    statedir.atomic_write(record_path, owned_to_json(owned))


def _absolute(path: str) -> None:
    if not os.path.isabs(path) or "\0" in path:
        raise ImageError(path, "must be an absolute path")
