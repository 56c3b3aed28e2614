"""What wakes the daemon: file events, QEMU events and exits, SIGHUP, a jittered periodic resync.

Every source only puts a `Trigger` on one asyncio queue; the daemon answers each burst with the same full
reconcile (level-triggered: a trigger says when to look, never what to do). So a lost or duplicated
event costs at most a pass, and the periodic resync bounds how long anything can go unnoticed.

- `FileWatcher`: watchdog's inotify observer on the manifest roots. Its thread hands events to the loop
  with `call_soon_threadsafe`; hidden paths (.git, editor swap files) and non-YAML files are ignored.
- `ExitWatchers`: per live instance, a pidfd (the process exit, at once, even for SIGKILL) and a
  connection to the instance's *watcher* QMP socket (`qmp-watch.sock`; the control socket is the
  executor's and QEMU serves one client per socket) for SHUTDOWN, STOP and GUEST_PANICKED. What was
  seen is kept, so an exit can be told apart: a guest power-off (SHUTDOWN with guest: true), a panic,
  a stop asked over QMP, or an exit with no event at all (a crash or a kill). On a remote node both
  come from its host as they happen: the agent holds the pidfd there and answers when QEMU exits, and
  the watcher socket is forwarded over the SSH link (`WatchPort`).
- `HOST` triggers come from the daemon's host links (reconciler.watch.hosts): a link lost or back.
- `jittered`: the resync interval, spread so many daemons do not wake in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler import procwatch, qmp
from reconciler.errors import ProcessPinError, QmpError, QmpTimeout, RemoteHostError
from reconciler.manifest.discovery import SUFFIXES
from reconciler.procwatch import Ended, ExitSeen
from reconciler.values import Value


class TriggerSource(enum.StrEnum):
    STARTUP = "startup"
    FILE = "file"  # a manifest file changed
    QEMU = "qemu"  # an instance's QEMU sent an event or exited
    RESYNC = "resync"  # the periodic resync
    SIGHUP = "sighup"
    BACKOFF = "backoff"  # a restart held back by the crash-loop backoff may now happen
    FOLLOWUP = "followup"  # the previous pass changed things: look again until nothing is left to do
    HOST = "host"  # a remote host's link was lost, or is back


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Trigger(Value):
    """Why a pass runs."""

    source: TriggerSource
    detail: str = ""
    paths: tuple[str, ...] | None = None  # FILE: the paths the event named (None: unknown)
    instance: str | None = None  # QEMU: the instance whose QEMU it was (None: unknown)
    settled: bool = False  # FILE: the event ends a write of its paths (closed after writing, renamed in)


Emit = Callable[[Trigger], None]  # must be safe to call from the loop's thread


def jittered(interval: float, fraction: float = 0.1, rng: random.Random | None = None) -> float:
    """`interval` spread uniformly by +/- `fraction` of itself."""
    r = rng or random
    return interval * (1.0 + r.uniform(-fraction, fraction))


# --- files ------------------------------------------------------------------------------------------


def relevant_path(path: str, root: str) -> bool:
    """Whether a change at `path` (under `root`) can change the manifests: a YAML file or a directory,
    with no hidden component below the root."""
    rel = os.path.relpath(path, root) if path != root else ""
    parts = [p for p in rel.split(os.sep) if p and p != "."]
    if any(p.startswith(".") for p in parts):
        return False
    return not parts or parts[-1].endswith(SUFFIXES) or "." not in parts[-1]


class FileWatcher:
    """watchdog observer on the manifest roots; emits FILE triggers from its own thread via the loop.

    inotify watches an inode: a root that is replaced (deleted and recreated, or a symlink swapped to a
    new checkout) would go deaf. `recheck()` (called after every pass) re-arms a root whose inode moved
    and emits a FILE trigger, so the next pass looks at the new tree.
    """

    def __init__(self, roots: Sequence[str], loop: asyncio.AbstractEventLoop, emit: Emit) -> None:
        self._roots = [os.path.abspath(r) for r in roots]
        self._loop = loop
        self._emit = emit
        self._observer: Any = None
        self._watches: dict[str, tuple[Any, int | None]] = {}  # root -> (watch, inode when armed)

    def start(self) -> list[str]:
        """Start watching; returns the roots that cannot be watched now (missing), for the log."""
        from watchdog.observers import Observer

        self._observer = Observer()
        for root in self._roots:
            self._arm(root)  # a missing root is watched through its parent, if that exists
        self._observer.start()
        return [root for root in self._roots if not os.path.exists(root)]

    def recheck(self) -> list[str]:
        """Re-arm roots that were replaced or appeared since; returns them."""
        if self._observer is None:
            return []
        moved = []
        for root in self._roots:
            watch, inode = self._watches.get(root, (None, None))
            if _inode(_watched_dir(root)) != inode:
                if watch is not None:
                    with contextlib.suppress(KeyError, OSError):
                        self._observer.unschedule(watch)
                    del self._watches[root]
                if self._arm(root):
                    moved.append(root)
                    self._emit(Trigger(TriggerSource.FILE, f"re-armed the watch on {root}"))
        return moved

    def _arm(self, root: str) -> bool:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        outer = self
        # inotify on the resolved directory: watchdog does not follow a symlinked root itself.
        target = os.path.realpath(_watched_dir(root))

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.is_directory and event.event_type in ("modified", "attrib"):
                    return  # an entry changed inside: that entry's own event follows if it matters
                paths = [os.fsdecode(event.src_path)]
                if getattr(event, "dest_path", ""):
                    paths.append(os.fsdecode(event.dest_path))
                hits = [p for p in paths if relevant_path(p, target)]
                if hits:
                    settled = event.event_type in ("closed", "moved") and not event.is_directory
                    trigger = Trigger(TriggerSource.FILE, f"{event.event_type} {hits[0]}", tuple(hits),
                                      settled=settled)
                    outer._loop.call_soon_threadsafe(outer._emit, trigger)

        if not os.path.isdir(target):
            return False
        try:
            watch = self._observer.schedule(_Handler(), target, recursive=os.path.isdir(root))
        except OSError:
            return False
        self._watches[root] = (watch, _inode(target))
        return True

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(5.0)


def _watched_dir(root: str) -> str:
    """A directory root is watched recursively; a file root through its directory."""
    return root if os.path.isdir(root) else os.path.dirname(root)


def _inode(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino


# --- QEMU processes ---------------------------------------------------------------------------------


class ExitKind(enum.StrEnum):
    """How a QEMU process ended (or why its guest stopped), as far as the watcher saw it."""

    GUEST_POWEROFF = "guest-poweroff"  # SHUTDOWN with guest: true (QEMU lives on with -no-shutdown)
    PANIC = "guest-panicked"
    HOST_STOP = "stopped-by-host"  # SHUTDOWN with guest: false (a QMP quit, a signal QEMU handled)
    CRASH = "crash"  # the process ended with no SHUTDOWN event: killed or crashed


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Watched(Value):
    """A live instance to watch: identity of its process and where its watcher socket is."""

    name: str
    node: str
    pid: int
    started_at: float | None  # psutil create_time recorded at launch (None: do not verify)
    qmp_watch: str
    pidfile: str | None = None  # QEMU removes it on a clean exit: evidence when no event was seen

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.name, self.node, self.pid)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Observation(Value):
    """The last thing a watcher saw on an instance."""

    name: str
    node: str
    pid: int
    kind: ExitKind
    exited: bool  # the process is gone (False: a SHUTDOWN/panic with QEMU still alive)
    detail: str = ""


WATCH_EVENTS = ("SHUTDOWN", "STOP", "GUEST_PANICKED", "RESET", "RESUME")
TRIGGERING = frozenset({"SHUTDOWN", "STOP", "GUEST_PANICKED"})  # RESET/RESUME: only remembered
QMP_CONNECT_TIMEOUT = 2.0
QMP_RETRY_MAX = 30.0
CLOSE_TIMEOUT = 2.0
LEAVE_GRACE = 2.0  # seconds a watcher no longer wanted may still report its process's exit
_LONG_WAIT = 3600.0  # a watcher waits indefinitely, in bounded slices


class WatchPort(Protocol):
    """Where a node's QEMUs are watched from: this machine (`LocalPort`), or a remote node (RemoteNode), whose
    host watches the process with a pidfd there and answers the moment it exits, and whose watcher
    socket is forwarded over the link. Either way the exit is pushed as it happens: nothing is polled."""

    async def watch_exit(self, pid: int, started_at: float | None, pidfile: str | None,
                         timeout: float) -> ExitSeen: ...

    async def qmp_watch(self, instance: str, timeout: float) -> qmp.QmpSession: ...


class LocalPort:
    """A QEMU on this machine: a pidfd here, and its watcher socket (`qmp_watch`) as it is."""

    def __init__(self, qmp_watch: str) -> None:
        self._qmp_watch = qmp_watch

    async def watch_exit(self, pid: int, started_at: float | None, pidfile: str | None,
                         timeout: float) -> ExitSeen:
        return await procwatch.watch_exit(pid, started_at, pidfile, timeout)

    async def qmp_watch(self, instance: str, timeout: float) -> qmp.QmpSession:
        return await qmp.connect(self._qmp_watch, timeout, name="reconciler-watch")


def local_port(w: Watched) -> WatchPort:
    return LocalPort(w.qmp_watch)


_BEFORE_WATCH = "it had ended before its watch began"


class ExitWatchers:
    """One task per watched process; `sync` starts and cancels them to follow discovery.

    `port_of` says where a watched process is watched from (default: this machine); None means its node
    cannot be reached now (the task ends at once; the pass after the host is back starts it again). A
    host lost while watching ends its watchers quietly: the loss is the host links' to report."""

    def __init__(self, emit: Emit, on_observation: Callable[[Observation], None],
                 port_of: Callable[[Watched], WatchPort | None] = local_port,
                 on_change: Callable[[str], None] | None = None) -> None:
        self._emit = emit
        self._observe = on_observation
        self._port_of = port_of
        self._changed = on_change or (lambda name: None)  # the instance's state may have moved
        self._tasks: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self._ended: set[tuple[str, str, int]] = set()  # processes whose end was reported: never twice
        self._known: set[tuple[str, str, int]] | None = None  # every process synced so far (None: none yet)
        self._leaving: set[asyncio.Task[None]] = set()  # no longer wanted: cancelled after LEAVE_GRACE

    @property
    def watching(self) -> int:
        return len(self._tasks)

    def sync(self, live: Iterable[Watched], crashed: Iterable[Watched] = ()) -> None:
        """Watch the `live` processes. `crashed` are the processes discovery found ended without a clean
        exit (SIGKILL, a crash): one that was never watched (started by the last pass, it died before the
        pass after could list it) is reported here, once. Those found at the first sync ended before the
        daemon ran: they are not exits it saw."""
        wanted = {w.key: w for w in live}
        dead = {w.key: w for w in crashed}
        if self._known is not None:
            for key, w in dead.items():
                if key not in self._known and key not in self._ended:
                    kind, detail = classify_exit((), pidfile_left=True)
                    self._observe(Observation(w.name, w.node, w.pid, kind, True,
                                              f"{detail}; {_BEFORE_WATCH}"))
        self._known = wanted.keys() | dead.keys()
        self._ended &= wanted.keys() | dead.keys()  # a discovery that no longer lists a process forgets it
        for key in [k for k in self._tasks if k not in wanted or self._tasks[k].done()]:
            task = self._tasks.pop(key)
            if key not in wanted and not task.done():
                # Not at once: a pass can see a process gone before its watcher's pidfd wake-up has run
                # (a partial discovery may not yield to the loop); the watcher still reports that exit.
                self._leaving.add(task)
                task.add_done_callback(self._leaving.discard)
                asyncio.get_running_loop().call_later(LEAVE_GRACE, task.cancel)
        for key, w in wanted.items():
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(self._guarded(w), name=f"watch {w.name}@{w.node}")

    async def close(self, timeout: float = 5.0) -> list[asyncio.Task[None]]:
        """Cancel every watcher; returns those still running after `timeout` (abandoned)."""
        tasks = [*self._tasks.values(), *self._leaving]
        self._tasks.clear()
        self._leaving.clear()
        for t in tasks:
            t.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return list(pending)

    async def _guarded(self, w: Watched) -> None:
        port = self._port_of(w)
        if port is None:
            return
        try:
            await self._watch(w, port)
        except RemoteHostError:
            return  # the link went away: reported (and reconnected) by the daemon's host links
        except ProcessPinError:
            return  # not pinned (no descriptor left?): no exit is claimed; the next sync watches it again

    async def _watch(self, w: Watched, port: WatchPort) -> None:
        seen: list[qmp.QmpEvent] = []
        events = asyncio.create_task(self._events(w, port, seen), name=f"qmp-watch {w.name}@{w.node}")
        try:
            while (result := await port.watch_exit(w.pid, w.started_at, w.pidfile, _LONG_WAIT)).ended \
                    is Ended.RUNNING:
                pass  # the watch is renewed in bounded slices
            self._changed(w.name)
            kind, detail = classify_exit(seen, result.pidfile_left)
            if result.ended is Ended.GONE:  # it ended between the discovery that saw it and this watch
                detail += f"; {_BEFORE_WATCH}"
            if w.key not in self._ended:  # a watch renewed on a process already seen ending says nothing new
                self._ended.add(w.key)
                self._observe(Observation(w.name, w.node, w.pid, kind, True, detail))
            self._emit(Trigger(TriggerSource.QEMU, f"{w.name}@{w.node}: QEMU exited ({kind.value})",
                               instance=w.name))
        finally:
            events.cancel()
            await asyncio.wait({events}, timeout=CLOSE_TIMEOUT)  # never hang on a stuck QMP client

    async def _events(self, w: Watched, port: WatchPort, seen: list[qmp.QmpEvent]) -> None:
        # QEMU serves one client per socket: right after a daemon restart the old connection may not be
        # closed yet. Retry with a growing delay while the process lives (its exit comes via the pidfd).
        delay = 0.5
        while True:
            try:
                session = await port.qmp_watch(w.name, QMP_CONNECT_TIMEOUT)
                break
            except QmpError:
                await asyncio.sleep(delay)  # a retry timer, not a poll: the exit comes via the pidfd
                delay = min(delay * 2, QMP_RETRY_MAX)
            except RemoteHostError:
                return  # the link is gone: the exit watch reports that
        self._changed(w.name)  # events before this moment were not heard: ask its state once more
        try:
            while True:
                try:
                    event = await session.wait_event(WATCH_EVENTS, _LONG_WAIT)
                except QmpTimeout:
                    continue
                seen.append(event)
                del seen[:-8]  # only the latest events matter
                self._changed(w.name)
                if event.name in ("SHUTDOWN", "GUEST_PANICKED"):
                    kind, detail = classify_exit(seen)
                    self._observe(Observation(w.name, w.node, w.pid, kind, False, detail))
                if event.name in TRIGGERING:
                    self._emit(Trigger(TriggerSource.QEMU, f"{w.name}@{w.node}: {describe_event(event)}",
                                       instance=w.name))
        except QmpError:
            return
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await session.close()


def describe_event(event: qmp.QmpEvent) -> str:
    if event.name == "SHUTDOWN":
        return f"SHUTDOWN guest={str(bool(event.data.get('guest'))).lower()} " \
               f"reason={event.data.get('reason', '?')}"
    return event.name


def classify_exit(seen: Sequence[qmp.QmpEvent], pidfile_left: bool | None = None) -> tuple[ExitKind, str]:
    """Why the guest stopped / QEMU ended, from the events seen before (pure). A RESET or RESUME after a
    SHUTDOWN means the guest ran again (an in-place restart): that SHUTDOWN no longer explains an exit.
    With no event to go by (the watcher's QMP may not have been connected yet), an exited QEMU that removed
    its pidfile (`pidfile_left` False) exited cleanly: a signal it handled or a quit, not a crash."""
    for event in reversed(seen):
        if event.name in ("RESET", "RESUME"):
            break
        if event.name == "GUEST_PANICKED":
            return ExitKind.PANIC, "GUEST_PANICKED"
        if event.name == "SHUTDOWN":
            reason = str(event.data.get("reason", ""))
            if event.data.get("guest"):
                return ExitKind.GUEST_POWEROFF, f"SHUTDOWN by the guest ({reason})"
            return ExitKind.HOST_STOP, f"SHUTDOWN by the host ({reason})"
    if pidfile_left is False:
        return ExitKind.HOST_STOP, "exited cleanly (pidfile removed) without a SHUTDOWN event seen"
    return ExitKind.CRASH, "exited without a SHUTDOWN event"
