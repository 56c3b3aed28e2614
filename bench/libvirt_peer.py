"""libvirt's live migration as a baseline: a second libvirtd on this machine to migrate to (optional).

libvirt refuses a migration to its own host (it compares host UUIDs), so the peer is a second libvirtd
in a private mount namespace (unshare -m): its own /run/libvirt, /var/lib/libvirt, /etc/libvirt (a copy,
with another `host_uuid`), /var/cache/libvirt and /var/log/libvirt, bind-mounted from a temporary
directory, and its own virtlogd. It shares the network (migration runs over loopback, as ours does)
and the file system otherwise (the guest's kernel and initrd are at the same paths on both "hosts").
Its socket is reachable from here at `<tmp>/run/libvirt-sock`.

The guest is the test guest with the same shape as the migrate benchmark's instances (TCG, 128 MiB, one
vCPU, a user-mode virtio NIC, the serial console connected to a socket of ours), created fresh for each
run (`virsh create`), migrated once it printed its ready line (`virsh migrate --live`, the destination's QEMU
listening on 127.0.0.1), then destroyed on the peer. libvirt lifts QEMU's bandwidth cap itself.
Used by bench_apply.py when `virsh` reaches qemu:///system and `unshare` exists; never in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DOMAIN = "reconciler-bench-mig"
LOCAL = "qemu:///system"
PEER_UUID = "5b0f3c3e-7a51-4b8e-9d0a-0d2c6f1e2b02"
BOUND = ("/run/libvirt", "/var/lib/libvirt", "/etc/libvirt", "/var/cache/libvirt", "/var/log/libvirt")


def available() -> bool:
    """virsh, unshare and libvirtd are here, and the system libvirtd answers."""
    return all(shutil.which(tool) for tool in ("virsh", "unshare", "libvirtd")) and reachable()


def reachable() -> bool:
    """The system libvirtd (qemu:///system) answers virsh."""
    done = subprocess.run(["virsh", "-c", LOCAL, "version"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def virsh(uri: str, *args: str, check: bool = True) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=180,
                          check=False)
    elapsed = time.perf_counter() - t0
    if check and done.returncode != 0:
        raise SystemExit(f"virsh -c {uri} {' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


@contextlib.contextmanager
def peer() -> Iterator[str]:
    """A second libvirtd for the time of the block; yields its URI."""
    with tempfile.TemporaryDirectory(prefix="libvirt-peer-") as tmp:
        root = Path(tmp)
        for bound in BOUND:
            (root / bound.strip("/").replace("/", "_")).mkdir()
        etc = root / "etc_libvirt"
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
        with (etc / "libvirtd.conf").open("a") as conf:
            conf.write(f'\nhost_uuid = "{PEER_UUID}"\n')
        run = root / "run_libvirt"
        # The peer's whole life in one namespace: bind its directories, start its virtlogd, then libvirtd
        # in the foreground (our child: killed at the end with everything it started).
        script = [*(f'mount --bind "$1/{b.strip("/").replace("/", "_")}" {b}' for b in BOUND),
                  'virtlogd -d -p "$1/run_libvirt/virtlogd.pid"',
                  'exec libvirtd -p "$1/run_libvirt/libvirtd.pid"']
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # libvirtd says READY=1 (sd_notify)
        notify.bind(str(root / "notify"))
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-ec", "\n".join(script),
                                 "peer", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "NOTIFY_SOCKET": str(root / "notify")},
                                start_new_session=True)
        uri = f"qemu+unix:///system?socket={run / 'libvirt-sock'}"
        try:
            _wait_ready(notify, 30.0)
            yield uri
        finally:
            notify.close()
            virsh(uri, "destroy", DOMAIN, check=False)
            _stop(proc, run / "virtlogd.pid")


def _wait_ready(notify: socket.socket, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        notify.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            if b"READY=1" in notify.recv(4096):
                return
        except TimeoutError:
            raise SystemExit(f"the peer libvirtd did not say READY=1 within {timeout:.0f} s") from None


def _stop(proc: subprocess.Popen[bytes], virtlogd_pid: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(virtlogd_pid.read_text().strip()), signal.SIGTERM)  # the peer's own, by its pidfile


def domain_xml(kernel: str, initrd: str, serial: Path, *, name: str = DOMAIN, serial_mode: str = "connect",
               mac: str = "52:54:00:00:0c:03") -> str:
    """The bench guest as a libvirt domain: the test guest's kernel and initrd, 128 MiB, one vCPU, its
    console on a unix socket (`connect`: to a listener of ours; `bind`: QEMU listens)."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>root=/dev/ram0 ro console=ttyS0,115200 quiet panic=-1</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type='unix'><source mode='{serial_mode}' path='{serial}'/></serial>
    <interface type='user'><mac address='{mac}'/><model type='virtio'/></interface>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def migrations(kernel: str, initrd: str, runs: int) -> list[float]:
    """Wall seconds of `virsh migrate --live` of a fresh, booted guest to the peer, `runs` times."""
    times = []
    with peer() as uri, tempfile.TemporaryDirectory(prefix="libvirt-mig-") as tmp:
        virsh(LOCAL, "destroy", DOMAIN, check=False)
        for i in range(runs + 1):  # the first run makes the peer probe QEMU's capabilities: not counted
            serial = Path(tmp) / f"serial-{i}.sock"
            xml = Path(tmp) / f"domain-{i}.xml"
            xml.write_text(domain_xml(kernel, initrd, serial))
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(str(serial))
                listener.listen(4)  # the source's QEMU connects, then the destination's
                virsh(LOCAL, "create", str(xml))
                try:
                    _wait_line(listener, b"reconciler-guest: ready", 60.0)
                    took = virsh(LOCAL, "migrate", "--live", DOMAIN, uri, "--migrateuri", "tcp://127.0.0.1")
                finally:
                    virsh(LOCAL, "destroy", DOMAIN, check=False)  # should the migration have failed
                virsh(uri, "destroy", DOMAIN)
            if i:
                times.append(took)
    return times


def _wait_line(listener: socket.socket, needle: bytes, timeout: float) -> None:
    """Read the guest's serial console (its QEMU connects to `listener`) until `needle`."""
    deadline = time.monotonic() + timeout
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    with conn:
        seen = b""
        while needle not in seen:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                why = f"no {needle.decode()!r} on the libvirt guest's console in {timeout:.0f} s"
                raise SystemExit(why) from None
            if not chunk:
                raise SystemExit("the libvirt guest's console closed before it was ready")
            seen = seen[-len(needle):] + chunk
