"""End-to-end: `status`, `node-info` and `console` against real QEMU processes and real manifests.

The commands run in-process through `reconciler.cli.main` (output captured), except `console`, which
needs a terminal: it runs as a subprocess on a pty, where raw mode, the guest's output, Ctrl-] and the
restored terminal can all be observed.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest

from reconciler import cli, manifest, model, qmp
from reconciler.actual import StopCause
from reconciler.commands import console, status

from .helpers import Reaper, short_state_dir, start
from .test_discovery_e2e import fake_record

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

READ_TIMEOUT = 60.0
EXIT_TIMEOUT = 10.0


def _instance(name: str, spec: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\nspec: {spec}\n"


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.reap()


@pytest.fixture
def mdir(guest: Guest) -> Iterator[Path]:
    """A manifest directory: node n1 (TCG, short state dir), vm1 (the guest, paused at start with -S so
    no console output is lost), vm2 (Halted), vm3 (declared, never started)."""
    for state_dir in short_state_dir():
        d = Path(state_dir) / "manifests"
        d.mkdir()
        kernel = f"{{path: {guest.kernel}, initrd: {guest.initrd}, root: /dev/ram0, cmdline: quiet panic=-1}}"
        (d / "node.yaml").write_text(
            f"apiVersion: reconciler/v1\nkind: Node\nmetadata: {{name: n1}}\n"
            f"spec: {{stateDir: {state_dir}, accelerator: tcg}}\n")
        (d / "vms.yaml").write_text("---\n".join([
            _instance("vm1", f"{{node: n1, memory: 128M, vcpus: 2, kernel: {kernel}, qemuExtraArgs: [-S]}}"),
            _instance("vm2", "{node: n1, memory: 64M, runStrategy: Halted}"),
            _instance("vm3", "{node: n1, memory: 32M}"),
        ]))
        yield d


def _desired(mdir: Path) -> model.DesiredState:
    result = manifest.load([str(mdir)])
    assert result.desired is not None, [str(p) for p in result.problems]
    return result.desired


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_status(mdir: Path, reaper: Reaper, capsys: pytest.CaptureFixture[str], qemu_binary: str) -> None:
    desired = _desired(mdir)
    node = desired.nodes["n1"]
    rec, _ = start(reaper, desired.instances["vm1"], node)
    fake_record(node, "old1", 999_999_999, 1.0, ("gone",), cause=StopCause.RECONCILER)  # an orphan
    by_hand = reaper.qemu_by_hand([qemu_binary, "-name", "handmade", "-S", "-m", "16", "-nodefaults",
                                   "-display", "none", "-accel", "tcg"])

    rc, out, err = _run(capsys, "status", "--json", str(mdir))
    assert (rc, err) == (0, "")
    doc = json.loads(out)
    assert doc["format_version"] == 1
    # Other runs on this host may have QEMUs of the same names: unmanaged rows, without a node.
    rows = {r["name"]: r for r in doc["instances"] if r["node"] is not None}
    rows["handmade"] = next(r for r in doc["instances"] if r["pid"] == by_hand.pid)
    vm1 = rows["vm1"]
    assert vm1["uptime"] is not None and 0 <= vm1["uptime"] < 120
    assert {**vm1, "uptime": 0} == {
        "name": "vm1", "node": "n1", "desired": "running", "actual": "paused", "pid": rec.pid,
        "memory_mib": 128, "vcpus": 2, "uptime": 0, "spec_match": True, "detail": "", "stop_cause": None,
        "stopped_at": None, "in_flight": None, "pending": [], "agent": None}
    assert (rows["vm2"]["desired"], rows["vm2"]["actual"], rows["vm2"]["pid"]) == ("stopped", "stopped", None)
    assert (rows["vm3"]["actual"], rows["vm3"]["detail"]) == ("stopped", "never started")
    assert (rows["old1"]["desired"], rows["old1"]["actual"]) == ("orphan", "stopped")
    assert (rows["handmade"]["actual"], rows["handmade"]["pid"]) == ("unmanaged", by_hand.pid)
    assert rows["handmade"]["memory_mib"] == 16

    rc, out, _ = _run(capsys, "status", str(mdir))
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "NODE", "DESIRED", "ACTUAL", "PID", "MEMORY", "VCPUS", "UPTIME", "SPEC", "DETAIL"]
    vm1_line = next(ln for ln in lines if ln.startswith("vm1 "))
    assert vm1_line.split()[:7] == ["vm1", "n1", "running", "paused", str(rec.pid), "128M", "2"]
    assert vm1_line.split()[8] == "match"
    assert lines[1:].index(vm1_line) < lines[1:].index(next(ln for ln in lines if "unmanaged" in ln))

    # NAME filters; an unknown name is one clear line.
    rc, out, _ = _run(capsys, "status", "--json", "vm1", str(mdir))
    assert [r["name"] for r in json.loads(out)["instances"] if r["node"]] == ["vm1"]
    rc, out, err = _run(capsys, "status", "nope", str(mdir))
    assert rc == 1
    assert err == "error: instance nope: not declared in the manifests and not found on any node\n"

    # A changed manifest: the running spec no longer matches.
    vms = mdir / "vms.yaml"
    vms.write_text(vms.read_text().replace("memory: 128M", "memory: 256M"))
    rc, out, _ = _run(capsys, "status", "--json", "vm1", str(mdir))
    assert json.loads(out)["instances"][0]["spec_match"] is False

    # Broken manifests: actual state is still shown, the problem count goes to stderr.
    vms.write_text(vms.read_text() + "---\n" + _instance("bad", "{node: n1, memory: 12X}"))
    rc, out, err = _run(capsys, "status", "--json", str(mdir))
    assert rc == 0
    assert err.startswith("warning: 1 problem in the manifests")
    rows = {r["name"]: r for r in json.loads(out)["instances"] if r["node"] is not None}
    assert (rows["vm1"]["actual"], rows["vm1"]["desired"], rows["vm1"]["memory_mib"]) == ("paused", "?", 128)
    assert "vm3" not in rows  # declared instances are unknown without valid manifests


def test_node_info(mdir: Path, reaper: Reaper, capsys: pytest.CaptureFixture[str]) -> None:
    desired = _desired(mdir)
    start(reaper, desired.instances["vm1"], desired.nodes["n1"])
    rc, out, err = _run(capsys, "node-info", "--json", str(mdir))
    assert (rc, err) == (0, "")
    (info,) = json.loads(out)["nodes"]
    assert (info["name"], info["accelerator"]) == ("n1", "tcg")
    assert (info["memory_instances_mib"], info["instances_running"]) == (128, 1)
    assert info["memory_allocatable_mib"] == info["memory_total_mib"] > 0
    assert 0 < info["memory_available_mib"] <= info["memory_total_mib"]
    assert info["cpus"] == os.cpu_count()
    assert info["qemu_version"].startswith("7.")
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        kvm = True
    except OSError:
        kvm = False
    assert info["kvm_usable"] is kvm
    assert info["uefi_firmware"] is os.path.isfile("/usr/share/OVMF/OVMF_CODE_4M.fd")  # .ci/setup: ovmf
    assert info["secure_boot_firmware"] is all(os.path.isfile(f"/usr/share/OVMF/{f}") for f in (
        "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"))
    rc, out, _ = _run(capsys, "node-info", str(mdir))
    assert "our instances use 128 MiB (1 running)" in out
    assert "  firmware     bios; uefi (OVMF present, with secure boot)" in out  # both builds (.ci/setup)


# ------------------------------------------------------------------------------------------ console


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} within {timeout}s; got {bytes(seen[-500:])!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            assert chunk, f"pty closed before {needle!r}; got {bytes(seen[-500:])!r}"
            seen += chunk


def test_console_shows_guest_output_and_ctrl_bracket_detaches(
    guest: Guest, mdir: Path, reaper: Reaper
) -> None:
    desired = _desired(mdir)
    _, paths = start(reaper, desired.instances["vm1"], desired.nodes["n1"])
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "console", "vm1", str(mdir)],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    reaper.children.append(proc)
    seen = bytearray()
    try:
        _read_until(master, b"Escape character is ^]", seen, READ_TIMEOUT)
        assert not termios.tcgetattr(slave)[3] & termios.ECHO  # raw mode while attached

        async def cont() -> None:
            async with qmp.session(paths.qmp) as s:
                await s.execute("cont")

        asyncio.run(cont())  # the guest boots only now: its whole console output reaches us
        _read_until(master, guest.ready_line.encode(), seen, READ_TIMEOUT)
        os.write(master, b"\x1d")
        assert proc.wait(EXIT_TIMEOUT) == 0
        _read_until(master, b"detached", seen, READ_TIMEOUT)
        assert termios.tcgetattr(slave) == before  # the terminal is restored
    finally:
        os.close(master)
        os.close(slave)


def test_console_errors_are_one_line(mdir: Path, reaper: Reaper, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "console", "vm2", str(mdir))
    assert (rc, out, err) == (1, "", "error: instance vm2 is not running (stopped)\n")
    rc, _, err = _run(capsys, "console", "nope", str(mdir))
    assert (rc, err) == (1, "error: instance nope: not declared in the manifests and not found on any node\n")
    # VNC on, serial console off: the VNC address is printed, then why there is no serial console.
    vms = mdir / "vms.yaml"
    vms.write_text(vms.read_text() + "---\n" + _instance(
        "vnc1", "{node: n1, memory: 16M, serialConsole: false, vnc: {display: 57}, qemuExtraArgs: ['-S']}"))
    desired = _desired(mdir)
    start(reaper, desired.instances["vnc1"], desired.nodes["n1"])
    rc, out, err = _run(capsys, "console", "vnc1", str(mdir))
    assert out == "VNC listening on 127.0.0.1:5957 (display :57)\n"
    assert rc == 1
    assert err == "error: console of instance vnc1: the serial console is off (serialConsole: false)\n"


def test_vnc_line_uses_the_bind_address_value() -> None:
    assert console.vnc_line(model.Vnc("0.0.0.0", 1)) == "VNC listening on 0.0.0.0:5901 (display :1)"


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (5.9, "5s"), (61, "1m01s"), (3600 * 5 + 120, "5h02m"), (86400 * 2 + 3600 * 3, "2d03h")])
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert status.format_uptime(seconds) == text
