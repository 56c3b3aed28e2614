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
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler import statedir
from reconciler.errors import ReconcilerError
from reconciler.provision import baseprobe
from reconciler.provision.imagecheck import ImageCheck, ImageQuery
from reconciler.values import Value

QEMU_IMG = "qemu-img"
TIMEOUT = 30.0


class ImageFormat(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class ImageError(ReconcilerError):
    """An image could not be inspected, created or deleted; `path` names the file."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"disk image {self.path}: {self.detail}"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ImageInfo(Value):
    """What `qemu-img info` says about an image."""

    format: str
    virtual_size: int  # bytes
    backing: str | None


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class OwnedImage(Value):
    """An image the reconciler created: the only kind it may ever delete."""

    path: str
    created_at: float
    device: int
    inode: int
    base: str | None = None  # the base image of an overlay
    size: int | None = None  # bytes, for a blank disk
    instance: str | None = None  # the instance it was created for


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


async def inspect(path: str, *, shared: bool = True) -> ImageInfo:
    """Format and virtual size of an image (qemu-img info; the image is opened read-only). `shared`:
    even while a QEMU writes it (-U); otherwise that fails on QEMU's image lock."""
    _absolute(path)
    raw = json.loads(await _qemu_img(path, "info", "--output=json", *(["-U"] if shared else []), path))
    return ImageInfo(str(raw["format"]), int(raw["virtual-size"]), raw.get("backing-filename"))


async def check_base(path: str) -> ImageInfo:
    """A base image must be a readable raw or qcow2 file that nothing writes (QEMU's image lock tells:
    a running instance's writable disk is no base); ImageError says why it is not. Decided in this
    process from the base's first bytes when they suffice (baseprobe), else by qemu-img info."""
    _absolute(path)
    try:
        decided = baseprobe.probe(path)
    except baseprobe.BaseUnusable as err:
        raise ImageError(path, err.detail) from None
    if decided is not None:
        return ImageInfo(decided[0], decided[1], None)
    try:
        info = await inspect(path, shared=False)
    except ImageError as err:
        if '"write" lock' in err.detail:
            raise ImageError(path, baseprobe.WRITTEN) from None
        raise
    if info.format not in (ImageFormat.RAW, ImageFormat.QCOW2):
        raise ImageError(path, f"a base image must be raw or qcow2, not {info.format}")
    return info


async def create_overlay(path: str, base: str, base_format: ImageFormat,
                         size: int | None = None) -> OwnedImage:
    """A qcow2 overlay on `base` at `path` (of `size` bytes, else the base's), which must not exist; `base`
    is never written."""
    _absolute(base)
    return await _create(path, ("-f", "qcow2", "-b", base, "-F", base_format.value), base=base, size=size)


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
        _same_file(owned, "deleted")
    except FileNotFoundError:
        return
    os.unlink(owned.path)


def _same_file(owned: OwnedImage, what: str) -> None:
    """ImageError unless `owned.path` still is the very file the reconciler created (FileNotFoundError
    when it is gone)."""
    st = os.lstat(owned.path)
    if stat.S_ISLNK(st.st_mode):
        raise ImageError(owned.path, f"is now a symlink, not the image the reconciler created; not {what}")
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (owned.device, owned.inode):
        raise ImageError(owned.path, f"is no longer the file the reconciler created; not {what}")


def free_bytes(directory: str) -> int:
    """Space an unprivileged writer may use on the filesystem of `directory`."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


# --- ownership records, in the node's state directory ---------------------------------------------


def owned_to_json(owned: OwnedImage) -> bytes:
    return json.dumps({"format_version": 1, "path": owned.path, "created_at": owned.created_at,
                       "device": owned.device, "inode": owned.inode, "base": owned.base,
                       "size": owned.size, "instance": owned.instance}, indent=1).encode()


def owned_from_json(data: bytes) -> OwnedImage:
    try:
        raw = json.loads(data)
        if raw.get("format_version") != 1:
            raise ValueError(f"unsupported format_version {raw.get('format_version')!r}")
        return OwnedImage(str(raw["path"]), float(raw["created_at"]), int(raw["device"]), int(raw["inode"]),
                          raw.get("base"), raw.get("size"), raw.get("instance"))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ImageError("?", f"unreadable ownership record: {err}") from None


def write_owned(record_path: str, owned: OwnedImage) -> None:
    statedir.atomic_write(record_path, owned_to_json(owned))


def _absolute(path: str) -> None:
    if not os.path.isabs(path) or "\0" in path:
        raise ImageError(path, "must be an absolute path")


# --- the plan's question about the disks it would create (Node.check_images) ---------------------


async def check_for_create(queries: Sequence[ImageQuery]) -> dict[str, ImageCheck]:
    """Per disk to create: whether it can be (its directory exists; its base is a readable raw or qcow2
    image nothing writes, opened read-only) and how much room its filesystem has. Each distinct base and
    directory is looked at once, however many disks share it."""
    bases = sorted({q.base for q in queries if q.base is not None})
    infos = await asyncio.gather(*(_base_or_error(b) for b in bases), return_exceptions=False)
    base_info = dict(zip(bases, infos, strict=True))
    dirs: dict[str, tuple[int, int] | str] = {}
    out = {}
    for q in queries:
        directory = os.path.dirname(q.path)
        where = dirs.get(directory)
        if where is None:
            where = dirs[directory] = _directory(q.path, directory)
        if isinstance(where, str):
            out[q.path] = ImageCheck(q.path, where)
            continue
        device, free = where
        info = base_info.get(q.base) if q.base is not None else None
        if isinstance(info, ImageError):
            out[q.path] = ImageCheck(q.path, f"base image: {info.message}", device=device, free=free)
        elif info is not None:
            out[q.path] = ImageCheck(q.path, base_format=info.format, base_size=info.virtual_size,
                                     device=device, free=free)
        else:
            out[q.path] = ImageCheck(q.path, device=device, free=free)
    return out


async def _base_or_error(base: str) -> ImageInfo | ImageError:
    try:
        return await check_base(base)
    except ImageError as err:
        return err


def _directory(path: str, directory: str) -> tuple[int, int] | str:
    """(device, free bytes) of the directory a disk is created in, or the one-line reason it cannot be."""
    if not os.path.isabs(path) or "\0" in path:
        return f"disk image {path}: must be an absolute path"
    try:
        st = os.stat(directory)
        if not stat.S_ISDIR(st.st_mode):
            return f"disk image {path}: {directory} is not a directory"
        return st.st_dev, free_bytes(directory)
    except FileNotFoundError:
        return f"disk image {path}: the directory {directory} does not exist"
    except OSError as err:
        return f"disk image {path}: {directory}: {err.strerror or err}"


# --- what a node does for the executor (LocalNode.create_disk / delete_disk) ----------------------


async def provision(record_path: str, instance: str, path: str, *, base: str | None, size: int | None,
                    fmt: ImageFormat) -> OwnedImage | None:
    """Create the disk at `path` unless something is already there (None: an existing file is used as
    it is, and never becomes ours), and record it as owned at `record_path`."""
    if os.path.lexists(path):
        return None
    if base is not None:  # checked again, not taken from the plan: the base may have changed since
        owned = await create_overlay(path, base, ImageFormat((await check_base(base)).format), size)
    elif size is not None:
        owned = await create_blank(path, size, fmt)
    else:
        raise ImageError(path, "has neither a size nor a base image to be created from")
    owned = OwnedImage(owned.path, owned.created_at, owned.device, owned.inode, owned.base, owned.size,
                       instance)
    write_owned(record_path, owned)
    return owned


async def grow(path: str, size: int, fmt: ImageFormat) -> None:
    """Grow the image at `path` (not in use) to `size` bytes; qemu-img refuses a shrink (no --shrink)."""
    _absolute(path)
    await _qemu_img(path, "resize", "-q", "-f", fmt.value, path, str(size))


async def grow_recorded(record_path: str, path: str, size: int, fmt: ImageFormat) -> None:
    """Grow the image at `path` outside of QEMU (its instance is stopped) only if the reconciler created
    that very file (its ownership record; the same file, not a symlink): a file that already existed is
    never written outside of QEMU, so it grows only live, by its QEMU. ImageError says which."""
    owned = read_owned(record_path)
    if owned is None or owned.path != path:
        raise ImageError(path, "was not created by the reconciler, so it is never written outside of QEMU: "
                               "it grows live only (start the instance, then apply)")
    _same_file(owned, "grown")
    await grow(path, size, fmt)


def read_owned(record_path: str) -> OwnedImage | None:
    """The ownership record at `record_path`; None when there is none (the image is not ours)."""
    try:
        with open(record_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ImageError("?", f"ownership record {record_path}: {err.strerror or err}") from None
    return owned_from_json(data)


def delete_recorded(record_path: str, path: str) -> bool:
    """Delete the image at `path` if its ownership record says the reconciler created that very file;
    then drop the record. False when the image is not ours (nothing is touched). ImageError when the path
    now holds something else (a symlink or another file swapped in): refused, untouched."""
    owned = read_owned(record_path)
    if owned is None or owned.path != path:
        return False
    delete_owned(owned)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path)
    return True
