"""End-to-end: a patient QMP connect (qmp.connect(patient=True)) against a real QEMU that is SIGSTOPped
with its listen backlog full. A plain connect then fails at once; a patient one is woken by the kernel
the moment QEMU accepts again, or gives up with QmpTimeout at its deadline."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from reconciler import model, procs, qmp, records
from reconciler.errors import QmpConnectError, QmpTimeout
from reconciler.pidfd import ProcessHandle

from .helpers import Reaper, short_state_dir, start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _pinned(rec: records.AppliedRecord) -> ProcessHandle:
    handle = ProcessHandle.open_verified(rec.pid, lambda p: procs.check(p, rec.create_time, rec.argv).ours)
    assert handle is not None
    return handle


@pytest.fixture
def stopped_qemu() -> Iterator[tuple[str, ProcessHandle]]:
    """A paused QEMU, SIGSTOPped through a pidfd, with both of its pending-connection slots taken."""
    reaper = Reaper()
    try:
        for d in short_state_dir():
            node = model.NodeSpec(name="n1", state_dir=d, accelerator=model.Accelerator.TCG)
            spec = model.InstanceSpec(name="vm1", memory_mib=16, serial_console=False, extra_args=("-S",))
            rec, paths = start(reaper, spec, node)
            handle = _pinned(rec)
            queued: list[socket.socket] = []
            with handle:
                handle.send_signal(signal.SIGSTOP)
                try:
                    with pytest.raises(QmpTimeout):  # stopped by now: nobody says a word
                        asyncio.run(qmp.connect(paths.qmp, 0.2))
                    while True:  # take the remaining slots, however many there are
                        queued.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                        queued[-1].setblocking(False)
                        try:
                            queued[-1].connect(paths.qmp)
                        except BlockingIOError:
                            break
                        assert len(queued) < 16
                    for q in queued:  # closed, they stay queued until QEMU accepts (and drops) them
                        q.close()
                    yield paths.qmp, handle
                finally:
                    handle.send_signal(signal.SIGCONT)
                    for q in queued:
                        q.close()
    finally:
        reaper.reap()


def test_plain_connect_fails_at_once_on_a_full_backlog(stopped_qemu: tuple[str, ProcessHandle]) -> None:
    path, _ = stopped_qemu
    began = time.monotonic()
    with pytest.raises(QmpConnectError):
        asyncio.run(qmp.connect(path, 3.0))
    assert time.monotonic() - began < 1.0


def test_patient_connect_is_woken_when_qemu_accepts(stopped_qemu: tuple[str, ProcessHandle]) -> None:
    path, handle = stopped_qemu

    async def ask() -> str:
        async with asyncio.timeout(10):
            s = await qmp.connect(path, 5.0, patient=True)
        try:
            return str((await s.execute("query-status", timeout=5.0))["status"])
        finally:
            await s.close()

    timer = threading.Timer(1.0, handle.send_signal, (signal.SIGCONT,))
    began = time.monotonic()
    timer.start()
    try:
        assert asyncio.run(ask()) == "prelaunch"
    finally:
        timer.cancel()
    assert 0.9 <= time.monotonic() - began < 5.0


def test_patient_connect_gives_up_at_its_deadline(stopped_qemu: tuple[str, ProcessHandle]) -> None:
    path, _ = stopped_qemu
    began = time.monotonic()
    with pytest.raises(QmpTimeout):
        asyncio.run(qmp.connect(path, 1.0, patient=True))
    assert 1.0 <= time.monotonic() - began < 2.5
