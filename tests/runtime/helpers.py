"""Shared pieces of the runtime e2e tests: short state dirs, launching instances, and a reaper that kills
only processes these tests started (verified by psutil create_time + cmdline, pinned by a pidfd)."""

from __future__ import annotations

import asyncio
import select
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from reconciler import argv, launch, model, procs, records, statedir
from reconciler.layout import InstancePaths
from reconciler.pidfd import ProcessHandle

LAUNCH_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0


@dataclass
class Reaper:
    """Everything a test started; `reap()` kills it all (used from fixture finalizers)."""

    launched: list[launch.Launched] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def child(self, cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        streams: dict[str, object] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                                      "stderr": subprocess.DEVNULL}
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            cmd, **{**streams, **kwargs})
        self.children.append(proc)
        return proc

    def qemu_by_hand(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """A QEMU started as a person would (a foreground child, not ours), once it is up: its human
        monitor on stdio greets. Right after fork and exec, /proc/<pid>/cmdline can still be empty (the new
        program's arguments not yet in place), and a scan then sees no QEMU there."""
        proc = self.child([*argv, "-monitor", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline().startswith(b"QEMU "), "QEMU's monitor did not greet"
        return proc

    def reap(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()  # our own child
            proc.wait(EXIT_TIMEOUT)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        for item in self.launched:
            handle = ProcessHandle.open_verified(
                item.pid, lambda pid, it=item: procs.check(pid, it.create_time, it.argv).ours)  # type: ignore[misc]
            if handle is None:
                continue  # already gone (or no longer ours): never signal it
            with handle:
                handle.send_signal(signal.SIGKILL)
                assert asyncio.run(handle.wait_exit(EXIT_TIMEOUT)), f"QEMU pid {item.pid} did not die"


def short_state_dir() -> Iterator[str]:
    """A state dir short enough for unix socket paths (sun_path is 108 bytes; pytest's tmp_path is long)."""
    d = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def start(reaper: Reaper, spec: model.InstanceSpec, node: model.NodeSpec,
          revision: str | None = None) -> tuple[records.AppliedRecord, InstancePaths]:
    """Launch `spec` on `node` as the executor would, and write its applied record."""
    built = argv.build_launch(spec, node)
    launched = asyncio.run(launch.launch(spec.name, built.argv, built.paths, LAUNCH_TIMEOUT, built.env))
    reaper.launched.append(launched)
    rec = records.AppliedRecord.create(spec, node.name, launched.argv, launch.qemu_version(node.qemu_binary),
                                       launched.pid, launched.create_time, launched.started_at, revision)
    statedir.write_record(built.paths, rec)
    return rec, built.paths


def create_time(pid: int) -> float:
    return psutil.Process(pid).create_time()
