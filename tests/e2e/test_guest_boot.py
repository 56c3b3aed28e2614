"""End-to-end: the test guest boots under plain QEMU (TCG), says it is ready, and obeys (or, when told to,
ignores) the ACPI power button. Every other e2e test relies on exactly these behaviours.

QEMU connects as a client to sockets we listen on before launching it (serial and QMP), so nothing polls
for a socket to appear and no console output can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Guest, SerialConsole, SerialListener, SerialLog
from qemu.qmp import Message, QMPClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CONNECT_TIMEOUT = 10.0
BOOT_TIMEOUT = 60.0  # ~2 s alone; generous for 2 shared cores under TCG
EVENT_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0
IGNORED_PRESS_WINDOW = 3.0


@dataclass(frozen=True)
class Booted:
    proc: subprocess.Popen[bytes]
    qmp: QMPClient
    console: SerialConsole
    ready_line: str
    boot_seconds: float  # QEMU launch -> ready line


@contextlib.asynccontextmanager
async def boot(guest: Guest, qemu: str, tmp: Path, append: str) -> AsyncIterator[Booted]:
    """Launch QEMU on the guest, wait for QMP, the serial console and the ready line; kill it at the end."""
    serial_path, qmp_path = tmp / "serial.sock", tmp / "qmp.sock"
    listener = SerialListener(serial_path)
    qmp = QMPClient("e2e-guest-boot")
    await qmp.start_server(str(qmp_path))
    argv = guest.argv(qemu, append=append) + guest.serial_args(serial_path)
    argv += ["-chardev", f"socket,id=qmp,path={qmp_path}", "-mon", "chardev=qmp,mode=control"]
    with open(tmp / "qemu.stderr", "wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    console: SerialConsole | None = None
    try:
        await asyncio.wait_for(qmp.accept(), CONNECT_TIMEOUT)
        console = await asyncio.to_thread(listener.accept, CONNECT_TIMEOUT)
        ready = await asyncio.to_thread(console.wait_for, guest.ready_line, BOOT_TIMEOUT)
        boot_seconds = time.monotonic() - started
        print(f"\nboot time (QEMU launch -> ready line): {boot_seconds:.2f} s")
        yield Booted(proc, qmp, console, ready, boot_seconds)
    finally:
        if proc.poll() is None:
            proc.kill()  # our own child: safe to signal
        proc.wait()
        with contextlib.suppress(Exception):  # QEMU is gone; the session may end in an error
            await qmp.disconnect()
        listener.close()
        if console is not None:
            console.close()


def _data(event: Message) -> dict[str, object]:
    data = event["data"]
    assert isinstance(data, dict), event
    return data


async def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    return await asyncio.to_thread(proc.wait, EXIT_TIMEOUT)


def test_guest_boots_and_powers_off_on_acpi_button(guest: Guest, qemu_binary: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with boot(guest, qemu_binary, tmp_path, guest.append(tag="boot-1")) as vm:
            assert vm.ready_line == "reconciler-guest: ready boot-1"
            assert vm.boot_seconds < BOOT_TIMEOUT
            with vm.qmp.listener("SHUTDOWN") as shutdowns:
                await vm.qmp.execute("system_powerdown")
                event = await asyncio.wait_for(shutdowns.get(), EVENT_TIMEOUT)
            assert _data(event) == {"guest": True, "reason": "guest-shutdown"}
            assert await _exit_code(vm.proc) == 0
            # The guest said why: its acpid handler ran (the console is drained up to EOF by now).
            await asyncio.to_thread(vm.console.wait_for, "reconciler-guest: power button", EVENT_TIMEOUT)

    asyncio.run(scenario())


def test_guest_ignoring_acpi_keeps_running_until_quit(guest: Guest, qemu_binary: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        append = guest.append(tag="deaf", ignore_acpi=True)
        async with boot(guest, qemu_binary, tmp_path, append) as vm:
            assert vm.ready_line == "reconciler-guest: ready deaf"
            with vm.qmp.listener("SHUTDOWN") as shutdowns:
                await vm.qmp.execute("system_powerdown")
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(shutdowns.get(), IGNORED_PRESS_WINDOW)
                assert vm.proc.poll() is None
                # Still alive and talking: heartbeats continue after the ignored press.
                tick = await asyncio.to_thread(vm.console.wait_for, guest.tick_prefix, EVENT_TIMEOUT)
                assert tick.startswith(f"{guest.tick_prefix} ")
                await vm.qmp.execute("quit")
                event = await asyncio.wait_for(shutdowns.get(), EVENT_TIMEOUT)
            assert _data(event)["guest"] is False
            assert await _exit_code(vm.proc) == 0

    asyncio.run(scenario())


def test_guest_heartbeat_in_serial_log_file(guest: Guest, qemu_binary: str, tmp_path: Path) -> None:
    """Serial to a file (`-chardev file`), read with `SerialLog`: ready line, then tick 1, tick 2."""
    log_path = tmp_path / "serial.log"
    serial = ["-chardev", f"file,id=serial0,path={log_path}", "-serial", "chardev:serial0"]
    argv = [*guest.argv(qemu_binary), *serial]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        log = SerialLog(log_path)
        assert log.wait_for(guest.ready_line, BOOT_TIMEOUT) == guest.ready_line  # no tag: bare line
        assert log.wait_for(guest.tick_prefix, EVENT_TIMEOUT) == f"{guest.tick_prefix} 1"
        assert log.wait_for(guest.tick_prefix, EVENT_TIMEOUT) == f"{guest.tick_prefix} 2"
        assert proc.poll() is None
    finally:
        proc.kill()  # our own child
        proc.wait()
