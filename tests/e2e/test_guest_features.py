"""End-to-end: what the test guest sees and does beyond booting -- its report line (memory, CPUs, disks,
NICs), a cloud-init NoCloud seed, qemu-guest-agent, and memory/CPU hotplug -- on plain QEMU (TCG).

Why: the provisioning (issue 14) and live-change (issue 15) tests prove their effect from the guest's own
view; these tests prove that view is right first, against QEMU alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    AGENT_STARTED_PREFIX,
    SEED_PREFIX,
    Guest,
    GuestReport,
    SerialConsole,
    SerialListener,
    wait_for_report,
)
from qemu.qmp import QMPClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CONNECT_TIMEOUT = 10.0
BOOT_TIMEOUT = 60.0  # ~2 s alone; generous for 2 shared cores under TCG
DEVICES_TIMEOUT = 60.0  # ready line -> device modules loaded and the first report
EVENT_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Booted:
    proc: subprocess.Popen[bytes]
    qmp: QMPClient
    console: SerialConsole
    first_report: GuestReport


@contextlib.asynccontextmanager
async def boot(guest: Guest, tmp: Path, argv: Sequence[str]) -> AsyncIterator[Booted]:
    """Launch QEMU (argv from `Guest.argv`), wait for QMP, the ready line and the first report; kill it."""
    serial_path, qmp_path = tmp / "serial.sock", tmp / "qmp.sock"
    listener = SerialListener(serial_path)
    qmp = QMPClient("e2e-guest-features")
    await qmp.start_server(str(qmp_path))
    full = [*argv, *guest.serial_args(serial_path)]
    full += ["-chardev", f"socket,id=qmp,path={qmp_path}", "-mon", "chardev=qmp,mode=control"]
    with open(tmp / "qemu.stderr", "wb") as stderr:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    console: SerialConsole | None = None
    try:
        await asyncio.wait_for(qmp.accept(), CONNECT_TIMEOUT)
        console = await asyncio.to_thread(listener.accept, CONNECT_TIMEOUT)
        await asyncio.to_thread(console.wait_for, guest.ready_line, BOOT_TIMEOUT)
        first = await asyncio.to_thread(wait_for_report, console, lambda _: True, DEVICES_TIMEOUT)
        yield Booted(proc, qmp, console, first)
    finally:
        if proc.poll() is None:
            proc.kill()  # our own child: safe to signal
        proc.wait()
        with contextlib.suppress(Exception):  # QEMU is gone; the session may end in an error
            await qmp.disconnect()
        listener.close()
        if console is not None:
            console.close()


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _seed_iso(tmp: Path, user_data: bytes, meta_data: bytes) -> Path:
    """A NoCloud seed ISO labelled cidata, made with Debian's genisoimage (installed by .ci/setup)."""
    tool = shutil.which("genisoimage")
    if tool is None:
        pytest.fail("genisoimage not found on PATH (run .ci/setup)", pytrace=False)
    src = tmp / "seed"
    src.mkdir()
    (src / "user-data").write_bytes(user_data)
    (src / "meta-data").write_bytes(meta_data)
    iso = tmp / "seed.iso"
    argv = [tool, "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock"]
    subprocess.run([*argv, str(src / "user-data"), str(src / "meta-data")], check=True, capture_output=True)
    return iso


def test_report_shows_memory_cpu_disk_and_seed(guest: Guest, qemu_binary: str, tmp_path: Path) -> None:
    disk = tmp_path / "extra.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(disk), "64M")
    user_data = b"#cloud-config\nhostname: seeded\n"
    iso = _seed_iso(tmp_path, user_data, b"instance-id: iid-e2e-1\nlocal-hostname: seeded\n")
    argv = guest.argv(qemu_binary, append=guest.append(tag="features"))
    argv += ["-drive", f"file={disk},if=none,id=extra,format=qcow2", "-device", "virtio-blk-pci,drive=extra"]
    argv += ["-drive", f"file={iso},if=ide,media=cdrom,readonly=on,format=raw"]

    async def scenario() -> None:
        async with boot(guest, tmp_path, argv) as vm:
            report = vm.first_report
            assert report.cpus == 1
            assert 64 * 1024 < report.mem_kib < 128 * 1024  # MemTotal of -m 128, less the kernel's share
            assert report.blk["vda"] == 64 * MIB
            assert report.blk["sr0"] == iso.stat().st_size
            assert report.nics == {}
            seed = await asyncio.to_thread(vm.console.wait_for, SEED_PREFIX, EVENT_TIMEOUT)
            digest = hashlib.sha256(user_data).hexdigest()
            assert seed == f"{SEED_PREFIX}instance-id=iid-e2e-1 user-data-sha256={digest} device=sr0"
            # A report on request, unchanged (the guest prints otherwise only on a change).
            vm.console.send("report\n")
            again = await asyncio.to_thread(wait_for_report, vm.console, lambda _: True, EVENT_TIMEOUT)
            assert again == report

    asyncio.run(scenario())


def test_a_seed_written_by_the_reconciler_is_read_by_the_guest(guest: Guest, qemu_binary: str,
                                                               tmp_path: Path) -> None:
    """reconciler.provision's pycdlib image (not genisoimage's) is found and read as cloud-init would."""
    from reconciler.provision import iso, seed

    user_data = "#cloud-config\nusers:\n  - name: ops\n    passwd: $6$salt$hash\n"
    built = seed.build_seed("vm1", seed.SeedSpec(user_data=user_data))
    image = tmp_path / "seed.iso"
    iso.write_seed_iso(str(image), built)
    argv = guest.argv(qemu_binary, append=guest.append(tag="seeded"))
    argv += ["-drive", f"file={image},if=ide,media=cdrom,readonly=on,format=raw"]

    async def scenario() -> None:
        async with boot(guest, tmp_path, argv) as vm:
            line = await asyncio.to_thread(vm.console.wait_for, SEED_PREFIX, EVENT_TIMEOUT)
            digest = hashlib.sha256(user_data.encode()).hexdigest()
            want = f"instance-id={built.instance_id} user-data-sha256={digest} device=sr0"
            assert line == SEED_PREFIX + want

    asyncio.run(scenario())


def _agent_call(conn: socket.socket, command: str, deadline: float) -> dict[str, object]:
    conn.sendall(json.dumps({"execute": command}).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = conn.recv(65536)
        assert chunk, f"agent channel closed before answering {command}"
        data += chunk
    answer = json.loads(data)
    assert isinstance(answer, dict), answer
    return answer


def test_agent_answers_and_shuts_down_a_guest_that_ignores_acpi(
    guest: Guest, qemu_binary: str, tmp_path: Path
) -> None:
    agent_path = tmp_path / "agent.sock"
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # QEMU connects to it as a client
    agent.bind(str(agent_path))
    agent.listen(1)
    agent.settimeout(CONNECT_TIMEOUT)
    argv = guest.argv(qemu_binary, append=guest.append(tag="agent", ignore_acpi=True))
    argv += guest.agent_args(agent_path)

    async def scenario() -> None:
        async with boot(guest, tmp_path, argv) as vm:
            conn, _ = await asyncio.to_thread(agent.accept)
            with conn:
                await asyncio.to_thread(vm.console.wait_for, AGENT_STARTED_PREFIX, EVENT_TIMEOUT)
                deadline = time.monotonic() + EVENT_TIMEOUT
                assert await asyncio.to_thread(_agent_call, conn, "guest-ping", deadline) == {"return": {}}
                with vm.qmp.listener("SHUTDOWN") as shutdowns:
                    # guest-shutdown sends no answer on success: the guest powers off instead.
                    conn.sendall(b'{"execute": "guest-shutdown"}\n')
                    event = await asyncio.wait_for(shutdowns.get(), EVENT_TIMEOUT)
                assert event["data"] == {"guest": True, "reason": "guest-shutdown"}
                assert await asyncio.to_thread(vm.proc.wait, EXIT_TIMEOUT) == 0
                line = "reconciler-guest: agent shutdown, powering off"
                await asyncio.to_thread(vm.console.wait_for, line, EVENT_TIMEOUT)

    try:
        asyncio.run(scenario())
    finally:
        agent.close()


def test_hotplugged_memory_and_cpu_show_in_report(guest: Guest, qemu_binary: str, tmp_path: Path) -> None:
    argv = guest.argv(qemu_binary, memory_mib=128, max_memory_mib=512, cpus=1, max_cpus=2)

    async def scenario() -> None:
        async with boot(guest, tmp_path, argv) as vm:
            before = vm.first_report
            assert before.cpus == 1
            backend = {"qom-type": "memory-backend-ram", "id": "mem1", "size": 128 * MIB}
            await vm.qmp.execute("object-add", backend)
            await vm.qmp.execute("device_add", {"driver": "pc-dimm", "id": "dimm1", "memdev": "mem1"})
            grown = await asyncio.to_thread(
                wait_for_report, vm.console, lambda r: r.mem_kib > before.mem_kib, EVENT_TIMEOUT
            )
            assert grown.mem_kib - before.mem_kib == 128 * 1024  # one 128 MiB block, onlined whole

            cpus = await vm.qmp.execute("query-hotpluggable-cpus")
            assert isinstance(cpus, list)
            (free,) = [c for c in cpus if "qom-path" not in c]
            await vm.qmp.execute("device_add", {"driver": free["type"], "id": "cpu1", **free["props"]})
            two = await asyncio.to_thread(wait_for_report, vm.console, lambda r: r.cpus == 2, EVENT_TIMEOUT)
            assert two.mem_kib == grown.mem_kib

    asyncio.run(scenario())
