"""File I/O on a node's state directory: private directories, atomic writes, reading records and pidfiles.

Readers (discovery, status, another reconciler) must never see a half-written record, and a crash must
leave either the old or the new file. So every write goes to a temporary file in the same directory, is
fsynced, renamed over the target, and the directory is fsynced. Everything we create is private (0700
directories, 0600 files): the sockets inside give full control over the guests.

Removal is by known file names only: a disk image never lives in an instance directory and is never
removed by the reconciler, even if someone put one there.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from reconciler import layout, phases, records
from reconciler.errors import RecordError, StateDirError
from reconciler.model import NodeSpec

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_dir(path: str | os.PathLike[str]) -> str:
    """Create `path` (and missing parents) with mode 0700; an existing directory is tightened to 0700.

    With os.path rather than pathlib: a write (every start and stop) then costs no pathlib import.
    """
    p = os.fspath(path)
    try:
        missing = []  # makedirs would create parents with the umask's mode (0755): not ours
        parent = os.path.dirname(os.path.abspath(p))
        while not os.path.exists(parent):
            missing.append(parent)
            up = os.path.dirname(parent)
            if up == parent:
                break
            parent = up
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, DIR_MODE)
        with contextlib.suppress(FileExistsError):
            os.mkdir(p, DIR_MODE)
        if not os.path.isdir(p):
            raise NotADirectoryError(20, "Not a directory")
        if os.stat(p).st_mode & 0o777 != DIR_MODE:
            os.chmod(p, DIR_MODE)
    except OSError as err:
        raise StateDirError(p, err.strerror or str(err)) from None
    return p


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically (temp file + fsync + rename + directory fsync), mode 0600."""
    with phases.span("state file writes"):
        _atomic_write(os.fspath(path), data)


def _create_temp(directory: str, target: str) -> tuple[int, str]:
    """A new private file next to `target`, named after its writer: (fd, path)."""
    # The writer's PID in the name lets `remove_dead_temps` clean up after a writer killed mid-write.
    for _ in range(100):
        tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(17, "no free temporary file name", directory)


def _atomic_write(target: str, data: bytes) -> None:
    directory = ensure_dir(os.path.dirname(target) or ".")
    try:
        fd, tmp = _create_temp(directory, target)
    except OSError as err:
        raise StateDirError(target, f"cannot write: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateDirError(target, f"cannot write: {err.strerror or err}") from None
    _fsync_dir(directory)


def remove_dead_temps(directory: str | os.PathLike[str]) -> None:
    """Remove temporary files of `atomic_write` calls whose writer is gone (killed between creating the
    temporary file and renaming it). A live writer's (or a reused PID's) file is kept."""
    try:
        with os.scandir(directory) as it:
            names = [e.name for e in it if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = _temp_writer(name)
        if pid is not None and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _temp_writer(name: str) -> int | None:
    """The writer PID in ".<target>.<pid>.<random>.tmp", None for other names."""
    parts = name[1:-len(".tmp")].split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        return None
    return int(parts[-2])


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The decoded JSON file, or None when it does not exist. Raises StateDirError if it is not JSON."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise StateDirError(str(path), f"unreadable: {err}") from None


def write_record(paths: layout.InstancePaths, record: records.AppliedRecord) -> None:
    ensure_dir(paths.dir)
    atomic_write(paths.record, records.to_json(record).encode())


def read_record(paths: layout.InstancePaths) -> records.AppliedRecord | None:
    """The instance's applied record, None if it has none; RecordError if it is unreadable."""
    try:
        with open(paths.record, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RecordError(paths.record, err.strerror or str(err)) from None
    try:
        return records.from_json(raw)
    except records.DecodeError as err:
        raise RecordError(paths.record, str(err)) from None


def read_pidfile(path: str | os.PathLike[str]) -> int | None:
    """The PID in a pidfile; None if the file is missing, empty or garbage (QEMU writes "<pid>\\n")."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError):
        return None
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def instance_names(node: NodeSpec) -> list[str]:
    """Names of the instance directories on the node (sorted); none if the state dir does not exist."""
    try:
        with os.scandir(layout.instances_dir(node)) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StateDirError(node.state_dir, err.strerror or str(err)) from None
    return sorted(names)


def remove_instance_files(paths: layout.InstancePaths) -> None:
    """Remove the reconciler's own files of an instance, then its directory if that is now empty.

    Only known names are removed, so anything else a person left there (a disk image) survives.
    """
    own = [paths.pidfile, *paths.sockets, paths.serial_log, paths.intent, paths.record, paths.seed,
           paths.agent, paths.nvram, *_generated(paths.dir)]
    _unlink_all(own)
    with contextlib.suppress(OSError):
        os.rmdir(paths.dir)  # kept if something else is still inside


def remove_runtime_files(paths: layout.InstancePaths) -> None:
    """Remove what only a live process needs (pidfile, sockets, NIC facts, intent); keep the record and
    the serial log, so a stopped instance still says what it ran and what it printed last."""
    _unlink_all([paths.pidfile, *paths.sockets, paths.intent, paths.seed, paths.agent,
                 *_generated(paths.dir)])


def _generated(directory: str) -> list[str]:
    """Files of ours with generated names: bridge hook facts (nic-*.json) and interrupted atomic writes."""
    try:
        with os.scandir(directory) as it:
            return [e.path for e in it if (e.name.startswith("nic-") and e.name.endswith(".json"))
                    or (e.name.startswith(".") and e.name.endswith(".tmp"))]
    except OSError:
        return []


def _unlink_all(files: list[str]) -> None:
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
