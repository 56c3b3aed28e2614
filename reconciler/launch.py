"""Start one QEMU process from a built argv and make sure it really came up.

The argv (from `reconciler.argv`) includes `-daemonize` and `-pidfile`: QEMU's parent process exits only
after the guest is set up, its sockets listen and the pidfile is written, so "the parent exited 0" is the
event we wait for (with a deadline), not a sleep. Its stderr is captured so a failure reaches the user as
QEMU's own message. Then the control QMP socket must answer within the deadline; if it does not, the
process we just started (and verified) is killed, so a failed launch leaves nothing running.

Also here: the QEMU version, cached per binary path and mtime (records keep it; node-info shows it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from reconciler import cmdpath, layout, phases, procs, qmp, statedir, versioncache
from reconciler.errors import LaunchError, QmpError
from reconciler.pidfd import ProcessHandle
from reconciler.values import Value

STDERR_LIMIT = 2000  # characters of QEMU's stderr kept in an error message


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Launched(Value):
    """A QEMU process we started, with what proves its identity later."""

    pid: int
    create_time: float  # procs.create_time (as psutil's), recorded to prove identity later
    started_at: float  # epoch seconds just before exec
    argv: tuple[str, ...]
    status: str = ""  # QEMU's run state at its first QMP answer ("running", "inmigrate", ...)


async def launch(
    name: str, argv: Sequence[str], paths: layout.InstancePaths, timeout: float = 30.0,
    env: Sequence[tuple[str, str]] = (),
) -> Launched:
    """Run `argv` (which must daemonize) and wait until its control QMP socket answers `query-status`;
    the answer is `Launched.status`.

    Raises LaunchError with QEMU's stderr when it fails to start or does not come up within `timeout`.
    """
    argv = tuple(argv)
    if "-daemonize" not in argv or "-pidfile" not in argv:
        raise LaunchError(name, "the QEMU argv must contain -daemonize and -pidfile")
    deadline = time.monotonic() + timeout
    statedir.ensure_dir(paths.dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.pidfile)  # a stale one must not be mistaken for the new process's
    started_at = time.time()
    with phases.span("qemu exec until daemonized"):
        returncode, err_bytes = await _run_foreground(name, argv, env, _left(deadline), timeout)
    stderr = err_bytes.decode(errors="replace").strip()
    if returncode != 0:
        raise LaunchError(name, _qemu_message(stderr) or f"QEMU exited with status {returncode}")
    pid = statedir.read_pidfile(paths.pidfile)
    if pid is None:
        raise LaunchError(name, f"QEMU started but wrote no pidfile {paths.pidfile}")
    try:
        create_time = procs.create_time(pid)
    except (procs.NoSuchProcess, procs.AccessDenied):
        raise LaunchError(name, f"QEMU (pid {pid}) exited right after starting") from None
    launched = Launched(pid=pid, create_time=create_time, started_at=started_at, argv=argv)
    _restrict(paths)
    try:
        with phases.span("qemu first QMP answer"):
            status = await qmp.query_status(paths.qmp, _left(deadline))
    except QmpError as err:
        _kill_launched(launched)
        raise LaunchError(name, f"QEMU (pid {pid}) started but QMP did not answer: {err}") from None
    return replace(launched, status=status)


async def _run_foreground(name: str, argv: tuple[str, ...], env: Sequence[tuple[str, str]], wait: float,
                          timeout: float) -> tuple[int, bytes]:
    """Run QEMU's foreground process to its exit (it exits once the daemon is set up): (status, stderr).

    Its stderr goes to an anonymous memory file (memfd), read after the exit; the exit itself is awaited
    on a pidfd.
    No pipe (the daemon inherits it until its setup ends) and no asyncio child watcher (a thread per
    child in Python 3.11), both of which cost measurable time on a busy 2-core host.
    """
    with _stderr_file() as errfile:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfile,
                start_new_session=True, umask=0o077, env={**os.environ, **dict(env)} if env else None)
        except OSError as err:
            raise LaunchError(name, f"{argv[0]}: {err.strerror or err}") from None
        exited = await _wait_child(proc, wait)
        if not exited:
            proc.send_signal(signal.SIGKILL)  # our unreaped child: its PID cannot have been reused
        returncode = proc.wait()  # reaps at once: it has exited (or was just killed)
        if not exited:
            raise LaunchError(name, f"QEMU did not finish starting within {timeout:g}s")
        errfile.seek(0)
        return returncode, errfile.read()


def _stderr_file() -> BinaryIO:
    """A file for a child's stderr that nothing else can see: a memfd (no tempfile import, no disk), or an
    unlinked temporary file where memfd_create is refused."""
    try:
        return os.fdopen(os.memfd_create("qemu-stderr", os.MFD_CLOEXEC), "w+b")
    except (OSError, AttributeError):
        import tempfile

        return tempfile.TemporaryFile()


async def _wait_child(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether our child exited within `timeout`: on a pidfd, or, where none can be opened (a tracer or
    kernel without pidfd_open, no descriptor left), in a thread, so that a QEMU already forked is never
    left behind unrecorded because its foreground process could not be pinned."""
    try:
        fd = os.pidfd_open(proc.pid)  # our own child: no identity doubt
    except OSError:
        import asyncio

        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    with ProcessHandle(proc.pid, fd) as handle:
        return await handle.wait_exit(timeout)


def _restrict(paths: layout.InstancePaths) -> None:
    """Sockets and the serial log 0600: QEMU's daemonize sets its own umask (027) before creating them.

    The instance directory is 0700 already; this keeps each file private even if it is moved or linked.
    """
    for path in (*paths.sockets, paths.serial_log):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o600)


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def _qemu_message(stderr: str) -> str:
    """QEMU's error lines, joined into one line (it prefixes them with the binary name)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return " / ".join(lines)[-STDERR_LIMIT:]


def _kill_launched(launched: Launched) -> None:
    """Kill the process we just launched, only after pinning it and re-verifying its identity."""
    def verify(pid: int) -> bool:
        return procs.check(pid, launched.create_time, launched.argv).ours

    handle = ProcessHandle.open_verified(launched.pid, verify)
    if handle is not None:
        with handle:
            handle.send_signal(signal.SIGKILL)


# --- QEMU version -----------------------------------------------------------------------------------------

_VERSIONS: dict[versioncache.BinaryKey, str] = {}


def qemu_version(binary: str, state_dir: str | None = None) -> str:
    """`binary --version`'s version number (e.g. "7.2.22"), cached per binary file (resolved path, inode,
    size, mtime, ctime): in this process, and across runs in `state_dir` when given (versioncache).

    Raises LaunchError when the binary is missing or does not answer.
    """
    path = cmdpath.which(binary) or binary
    try:
        key = versioncache.BinaryKey.of(path)
    except OSError:
        raise LaunchError("-", f"QEMU binary {binary!r} not found") from None
    cached = _VERSIONS.get(key)
    if cached is None and state_dir is not None:
        cached = versioncache.lookup(versioncache.cache_path(state_dir), key)
    if cached is not None:
        _VERSIONS[key] = cached
        return cached
    try:
        with phases.span("qemu --version"):
            done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        raise LaunchError("-", f"{binary} --version failed: {err}") from None
    first = done.stdout.splitlines()[0] if done.stdout else ""
    words = first.split()
    version = words[words.index("version") + 1] if "version" in words[:-1] else first.strip()
    _VERSIONS[key] = version
    if state_dir is not None and version:
        versioncache.store(versioncache.cache_path(state_dir), key, version)
    return version
