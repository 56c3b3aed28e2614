"""Reusable checks for the reliability suite: call them after every injected fault.

1. `assert_single_qemu(state_dirs)`: never two QEMU processes for one instance across all nodes;
   `assert_none_lost(before, after)`: every instance running before still has a process.
2. `canary.Canaries`: decoys (and a stale pidfile naming one) that must never get a signal.
3. `snapshot(state_dirs)` + `assert_untouched(before, after)`: a broken manifest stopped, restarted or
   migrated nothing (same PIDs and create_times).
4. `assert_converged(plan)`: the next reconcile planned nothing (call with the second plan).
5. `assert_no_leaks(state_dirs, declared_running)`: no stale sockets, pidfiles, intents, temp files,
   incoming-migration targets or lock holders; `disk_hashes` + `assert_disks_unchanged`: user disk
   images byte for byte the same.

A QEMU process belongs to an instance when its `-pidfile` is `<state_dir>/instances/<name>/qemu.pid` for
one of the test's state directories, so processes of other tests and other helpers are never counted.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from reconciler.planner import Plan

from .canary import Canaries

__all__ = [
    "Canaries", "QemuProc", "assert_converged", "assert_disks_unchanged", "assert_no_leaks",
    "assert_none_lost", "assert_single_qemu", "assert_untouched", "disk_hashes", "qemu_by_instance",
    "snapshot",
]


@dataclass(frozen=True, slots=True)
class QemuProc:
    pid: int
    create_time: float
    state_dir: str
    name: str
    incoming: bool  # started with -incoming (a migration target)


def _instance_of(pidfile: str, state_dirs: Iterable[str]) -> tuple[str, str] | None:
    for state in state_dirs:
        prefix = os.path.join(os.path.abspath(state), "instances") + os.sep
        if pidfile.startswith(prefix) and pidfile.endswith(os.sep + "qemu.pid"):
            name = pidfile[len(prefix):-len(os.sep + "qemu.pid")]
            if name and os.sep not in name:
                return os.path.abspath(state), name
    return None


def qemu_by_instance(state_dirs: Iterable[str]) -> dict[str, list[QemuProc]]:
    """Live (non-zombie) QEMU processes whose -pidfile points into `state_dirs`, by instance name."""
    dirs = list(state_dirs)
    found: dict[str, list[QemuProc]] = defaultdict(list)
    for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
        cmd = proc.info["cmdline"] or []
        if not cmd or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not os.path.basename(cmd[0]).startswith("qemu-system"):
            continue
        pidfile = next((v for f, v in itertools.pairwise(cmd) if f == "-pidfile"), None)
        where = _instance_of(pidfile, dirs) if pidfile else None
        if where is not None:
            found[where[1]].append(QemuProc(proc.pid, proc.info["create_time"], where[0], where[1],
                                            "-incoming" in cmd))
    return dict(found)


def assert_single_qemu(state_dirs: Iterable[str]) -> dict[str, QemuProc]:
    """Invariant 1: at most one QEMU per instance across all nodes. Returns the one of each."""
    by_name = qemu_by_instance(state_dirs)
    twice = {n: [(p.pid, p.state_dir) for p in ps] for n, ps in by_name.items() if len(ps) > 1}
    assert not twice, f"instances with more than one QEMU process: {twice}"
    return {n: ps[0] for n, ps in by_name.items()}


Snapshot = Mapping[str, tuple[int, float]]


def snapshot(state_dirs: Iterable[str]) -> dict[str, tuple[int, float]]:
    """(pid, create_time) of each instance's QEMU now (invariants 1 and 3)."""
    return {n: (p.pid, p.create_time) for n, p in assert_single_qemu(state_dirs).items()}


def assert_untouched(before: Snapshot, after: Snapshot) -> None:
    """Invariant 3: nothing was stopped, restarted or migrated (same processes, same start times)."""
    assert dict(after) == dict(before), f"processes changed: before {dict(before)}, after {dict(after)}"


def assert_none_lost(before: Snapshot, after: Snapshot, allowed: Iterable[str] = ()) -> None:
    """Invariant 1b: every instance that had a process still has one (possibly a new one)."""
    lost = sorted(set(before) - set(after) - set(allowed))
    assert not lost, f"running instances lost: {lost}"


def assert_converged(plan: Plan) -> None:
    """Invariant 4: the plan made after a converging reconcile has nothing to do and no errors."""
    todo = [f"{a.kind.value} {a.name} on {a.node} ({a.reason.value})" for a in plan.actions]
    assert plan.empty and not plan.errors, f"not converged: {todo} errors={[e.message for e in plan.errors]}"


def _lock_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases the flock we may have taken
    return True


def _qmp_status(p: QemuProc) -> str | None:
    """QEMU's run state over the instance's control socket; None when it does not answer."""
    import asyncio

    from reconciler import layout, qmp
    from reconciler.errors import QmpError
    from reconciler.model import NodeSpec

    sock = layout.instance_paths(NodeSpec(name="-", state_dir=p.state_dir), p.name).qmp
    try:
        return asyncio.run(qmp.query_status(sock, 5.0))
    except QmpError:
        return None


def assert_no_leaks(state_dirs: Iterable[str], ignore: Iterable[str | Path] = ()) -> None:
    """Invariant 5: once converged, every leftover is explained by a live QEMU of ours.

    No intent files, no temporary files of interrupted writes, no incoming-migration targets, no held
    node lock; pidfiles and sockets only in directories of instances whose QEMU is alive. `ignore`: files
    the test planted itself (a decoy's pidfile)."""
    dirs = list(state_dirs)
    planted = {Path(p) for p in ignore}
    live = assert_single_qemu(dirs)
    problems = []
    for p in live.values():
        if p.incoming and _qmp_status(p) in ("inmigrate", None):  # a completed target keeps -incoming
            problems.append(f"incoming migration target left: {p.name} (pid {p.pid})")
    for state in map(Path, dirs):
        lock = state / "node.lock"
        if lock.exists() and not _lock_free(lock):
            problems.append(f"node lock held: {lock}")
        instances = state / "instances"
        for d in sorted(instances.iterdir()) if instances.is_dir() else []:
            alive = d.name in live and live[d.name].state_dir == str(state.resolve())
            for f in sorted(d.iterdir()):
                if f in planted:
                    continue
                mode = f.lstat().st_mode
                if f.name == "intent.json" or f.name.endswith(".tmp"):
                    problems.append(f"leftover {f}")
                elif not alive and (stat.S_ISSOCK(mode) or f.name == "qemu.pid" or f.name.startswith("nic-")):
                    problems.append(f"stale {f} (no live QEMU for {d.name})")
    assert not problems, "\n".join(problems)


def disk_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each user disk image (take before, compare after)."""
    out = {}
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]
                h.update(chunk)
        out[str(path)] = h.hexdigest()
    return out


def assert_disks_unchanged(before: Mapping[str, str]) -> None:
    after = disk_hashes(before)
    changed = sorted(p for p in before if before[p] != after[p])
    assert not changed, f"user disk images changed: {changed}"
