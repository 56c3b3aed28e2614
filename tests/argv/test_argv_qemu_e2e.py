"""End-to-end: real QEMU (TCG) parses the built argv as intended.

Each test starts QEMU with `build_launch(...).argv` (daemonized: the foreground process exits once QEMU is
initialised, which is the "ready" event), asks QMP what QEMU understood (status, block nodes, VNC,
machine properties, chardevs), then quits it and waits for the exit on a pidfd, all under deadlines.
One test boots the test guest from a kernel path with a comma and checks the serial log and the
-no-shutdown behaviour; two start tap NICs inside a private network namespace to run the bridge hook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Guest, wait_for_line_in_file

from reconciler.argv import Launch, build_launch
from reconciler.model import (
    Accelerator,
    CacheMode,
    Disk,
    DiskBus,
    DiskFormat,
    InstanceSpec,
    KernelBoot,
    Nic,
    NicMode,
    NodeSpec,
    Vnc,
    VncTls,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

START_TIMEOUT = 30.0
QMP_TIMEOUT = 10.0


class Qmp:
    """A minimal synchronous QMP client: every read has a deadline (socket timeout)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(QMP_TIMEOUT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw", encoding="utf-8")
        self.events: list[dict[str, Any]] = []
        assert "QMP" in self._read()
        self.cmd("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise EOFError("QMP closed")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def cmd(self, name: str, **args: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                raise AssertionError(f"{name}: {msg['error']}")
            else:
                return msg["return"]

    def wait_event(self, name: str) -> dict[str, Any]:
        for ev in self.events:
            if ev["event"] == name:
                return ev
        while True:
            msg = self._read()  # raises TimeoutError after QMP_TIMEOUT
            if msg.get("event") == name:
                return msg

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def running(launch: Launch, prefix: Sequence[str] = (), extra: Sequence[str] = ("-S",)) -> Iterator[Qmp]:
    """Start the launch (plus `extra` args) daemonized; yield a QMP client; quit and reap on exit."""
    os.makedirs(launch.paths.dir, exist_ok=True)
    for f in launch.nic_files:
        Path(f.path).write_text(f.text)
    env = {**os.environ, **dict(launch.env)}
    res = subprocess.run([*prefix, *launch.argv, *extra], env=env, capture_output=True, text=True,
                         timeout=START_TIMEOUT, check=False)
    assert res.returncode == 0, res.stderr
    pid = int(Path(launch.paths.pidfile).read_text())
    pidfd = os.pidfd_open(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # pinned by the pidfd: verify it is ours
            assert launch.paths.pidfile.encode() in f.read().split(b"\0")
        qmp = Qmp(launch.paths.qmp)
        try:
            yield qmp
            qmp.cmd("quit")
        finally:
            qmp.close()
        ready, _, _ = select.select([pidfd], [], [], QMP_TIMEOUT)
        assert ready, "QEMU did not exit after quit"
    finally:
        ready, _, _ = select.select([pidfd], [], [], 0)
        if not ready:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)


@pytest.fixture
def node(qemu_binary: str) -> Iterator[NodeSpec]:
    state = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: socket paths must fit sun_path
    try:
        yield NodeSpec(name="n1", state_dir=state, accelerator=Accelerator.TCG, qemu_binary=qemu_binary)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=30)


def by_node(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {b["inserted"]["node-name"]: b["inserted"] for b in blocks if "inserted" in b}


def test_minimal_no_disks_user_nic(node: NodeSpec) -> None:
    spec = InstanceSpec(name="plain", memory_mib=64, acpi=False,
                        nics=(Nic(mac="52:54:00:aa:00:01", mode=NicMode.USER),))
    with running(build_launch(spec, node)) as qmp:
        assert qmp.cmd("query-status")["status"] == "prelaunch"
        assert qmp.cmd("query-name") == {"name": "plain"}
        assert qmp.cmd("query-block") == []
        assert qmp.cmd("qom-get", path="/machine", property="acpi") == "off"
        assert qmp.cmd("qom-get", path="/machine/peripheral/nic0", property="mac") == "52:54:00:aa:00:01"
        labels = {c["label"]: c["filename"] for c in qmp.cmd("query-chardev")}
        serial = os.path.join(node.state_dir, "instances/plain/serial.sock")
        assert labels["serial0"] == f"disconnected:unix:{serial},server=on"
        assert {"qmp", "qmp-watch"} <= labels.keys()
        # the second QMP socket serves a second client at the same time
        watch = Qmp(os.path.join(node.state_dir, "instances/plain/qmp-watch.sock"))
        try:
            assert watch.cmd("query-status")["status"] == "prelaunch"
        finally:
            watch.close()


def test_disks_commas_qcow2_readonly_scsi_cache(node: NodeSpec, tmp_path: Path) -> None:
    d = tmp_path / "dir, with ü"
    d.mkdir()
    qcow, raw = d / "boot,disk.qcow2", d / "ro.raw"
    qemu_img("create", "-f", "qcow2", str(qcow), "16M")
    qemu_img("create", "-f", "raw", str(raw), "1M")
    spec = InstanceSpec(name="disks", memory_mib=64, disks=(
        Disk(path=str(qcow), format=DiskFormat.QCOW2, boot=True, cache=CacheMode.WRITEBACK),
        Disk(path=str(raw), read_only=True),
        Disk(path=str(raw), read_only=True, bus=DiskBus.SCSI, cache=CacheMode.UNSAFE),
    ))
    with running(build_launch(spec, node)) as qmp:
        nodes = by_node(qmp.cmd("query-block"))
        assert nodes.keys() == {"disk0-format", "disk1-format", "disk2-format"}
        d0, d1, d2 = nodes["disk0-format"], nodes["disk1-format"], nodes["disk2-format"]
        assert (d0["file"], d0["drv"], d0["ro"]) == (str(qcow), "qcow2", False)
        assert d0["cache"] == {"writeback": True, "direct": False, "no-flush": False}
        assert (d1["file"], d1["drv"], d1["ro"]) == (str(raw), "raw", True)
        assert d1["cache"]["direct"] is True
        assert (d2["ro"], d2["cache"]["no-flush"]) == (True, True)
        assert qmp.cmd("qom-get", path="/machine/peripheral/disk0", property="bootindex") == 0
        assert qmp.cmd("qom-get", path="/machine/peripheral/disk2", property="parent_bus").endswith("scsi0.0")


def test_vnc_on_the_bind_address(node: NodeSpec) -> None:
    with socket.socket() as s:  # a free port above 5900 (ephemeral range), for its display number
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = InstanceSpec(name="vnc", memory_mib=64, vnc=Vnc(bind="127.0.0.1", display=port - 5900))
    with running(build_launch(spec, node)) as qmp:
        vnc = qmp.cmd("query-vnc")
        assert (vnc["enabled"], vnc["host"], vnc["service"]) == (True, "127.0.0.1", str(port))


def _x509_dir(d: Path) -> None:
    """A CA and a server certificate signed by it, as QEMU's tls-creds-x509 wants them in `d`."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=d)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
            "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server-key.pem", "-out", "server.csr",
            "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", "server-cert.pem", "-days", "2")


def test_vnc_tls_and_password(node: NodeSpec, tmp_path: Path) -> None:
    x509 = tmp_path / "pki, vnc"  # a comma: doubled in dir=
    x509.mkdir()
    _x509_dir(x509)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vnc = Vnc(bind="127.0.0.1", display=port - 5900, password_file="/nonexistent/never-read",
              tls=VncTls(x509_dir=str(x509)))
    spec = InstanceSpec(name="vnctls", memory_mib=64, vnc=vnc)
    with running(build_launch(spec, node)) as qmp:
        (server,) = qmp.cmd("query-vnc-servers")
        assert (server["auth"], server["vencrypt"]) == ("vencrypt", "x509-vnc")  # TLS + VNC password auth
        assert [(s["host"], s["service"]) for s in server["server"]] == [("127.0.0.1", str(port))]
        assert qmp.cmd("qom-get", path="/objects/vnc-tls0", property="dir") == str(x509)
        assert qmp.cmd("qom-get", path="/objects/vnc-tls0", property="endpoint") == "server"


def test_kernel_boot_serial_log_and_no_shutdown(node: NodeSpec, guest: Guest, tmp_path: Path) -> None:
    kdir = tmp_path / "k,1 x"
    kdir.mkdir()
    kernel, initrd = kdir / "vmlinuz", kdir / "initrd,img"
    shutil.copyfile(guest.kernel, kernel)
    shutil.copyfile(guest.initrd, initrd)
    spec = InstanceSpec(name="boot", memory_mib=128, kernel=KernelBoot(
        kernel=str(kernel), initrd=str(initrd), root="", cmdline="quiet panic=-1 reconciler.tag=argv"))
    launch = build_launch(spec, node)
    with running(launch, extra=()) as qmp:
        wait_for_line_in_file(Path(launch.paths.serial_log), guest.ready_line_for("argv"), 60)
        assert qmp.cmd("qom-get", path="/machine", property="append") == \
            "console=ttyS0,115200 quiet panic=-1 reconciler.tag=argv"
        qmp.cmd("system_powerdown")
        assert qmp.wait_event("SHUTDOWN")["data"]["guest"] is True
        # -no-shutdown: the process stays, in status "shutdown", for the reconciler to inspect
        assert qmp.cmd("query-status")["status"] == "shutdown"


needs_tap = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                               or shutil.which("unshare") is None, reason="tap needs root and /dev/net/tun")
NETNS = ("unshare", "--net", "--")  # a private network namespace: no interface appears on the host


@needs_tap
def test_tap_nic_default_hook(node: NodeSpec) -> None:
    spec = InstanceSpec(name="tap", memory_mib=64, nics=(Nic(mac="52:54:00:aa:00:02"),))
    launch = build_launch(spec, node)
    with running(launch, prefix=NETNS) as qmp:  # QEMU fails to start if the hook fails
        (info,) = [n for n in qmp.cmd("query-rx-filter") if n["name"] == "nic0"]
        assert info["main-mac"] == "52:54:00:aa:00:02"


@needs_tap
def test_tap_nic_user_hook_gets_the_contract(node: NodeSpec, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    hook = tmp_path / "vif-up"
    hook.write_text(
        f"#!{shutil.which('python3')}\nimport json, os, subprocess, sys\n"
        "up = subprocess.run(['ip', 'link', 'show', 'dev', sys.argv[1]], capture_output=True).returncode\n"
        "env = {k: os.environ[k] for k in ('INSTANCE', 'MAC', 'IP', 'BRIDGE', 'INTERFACE')}\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': env, 'exists': up == 0}}, open({str(seen)!r}, 'w'))\n")
    hook.chmod(0o755)
    nic = Nic(mac="52:54:00:aa:00:03", bridge="br-test", ip="192.0.2.3", hook=str(hook))
    spec = InstanceSpec(name="taphook", memory_mib=64, nics=(nic,))
    launch = build_launch(spec, node)
    ifname = launch.nic_files[0].config.interface
    with running(launch, prefix=NETNS):
        got = json.loads(seen.read_text())
    assert got == {"argv": [ifname], "exists": True, "env": {
        "INSTANCE": "taphook", "MAC": "52:54:00:aa:00:03", "IP": "192.0.2.3", "BRIDGE": "br-test",
        "INTERFACE": ifname}}


def test_rejected_spec_never_reaches_qemu(node: NodeSpec) -> None:
    from reconciler.errors import ArgvError

    spec = InstanceSpec(name="bad", memory_mib=64, cpu_model="host")
    with pytest.raises(ArgvError):
        build_launch(dataclasses.replace(spec), node)
