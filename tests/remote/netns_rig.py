"""A test rig of remote hosts on this machine: network namespaces, each with Debian's real sshd.

Why: remote nodes are reached over OpenSSH only, and the tests must cross a real network to a real
sshd, with nothing of the host visible to the controller by accident. Each host here is

- a network namespace with one veth on a bridge in the root namespace (a free 198.18.N.0/24, the range
  reserved for benchmarking, routed nowhere else; the controller is 198.18.N.1);
- a private PID namespace (its own process table, `/proc` mounted anew) and a private mount
  namespace, in which a tmpfs covers `STATE_ROOT`, so each host's state directory is its own;
- `sshd -D` as the namespace's init, with a host key generated for the run and one client key
  authorised for root. Killing the init ends every process of the host, QEMUs included.

Used as a library (`Rig.up(...)`, `rig.down()`, the `rig` fixture in conftest.py) and by hand:

    python3 tests/remote/netns_rig.py up --hosts 3 --dir /tmp/rig    # prints the hosts
    python3 tests/remote/netns_rig.py down --dir /tmp/rig

`down` reads `rig.json` in the directory, so it also tears down a rig whose creator died.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

SUBNET_BASE = "198.18."  # each rig takes a free 198.18.N.0/24 for its bridge; .1 is the controller
_SUBNET_LOCK = "/run/reconciler-rig.lock"  # two rigs built at once pick different subnets
STATE_ROOT = "/var/lib/reconciler-rig"  # a tmpfs of its own inside every host
SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 10.0

_INIT = str(Path(__file__).with_name("rig_init.py"))
_INIT_SSHD = str(Path(__file__).with_name("rig_sshd.py"))


# The rig's long-lived children, by PID: kept so that they are reaped (and waited for) at `down`.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class RigError(RuntimeError):
    """The rig could not be built (a missing tool, a command that failed, sshd not ready in time)."""


@dataclass(frozen=True)
class Host:
    name: str  # h1, h2, ...
    netns: str
    address: str
    veth: str
    init_pid: int  # the `unshare` process whose child is the host's init (sshd)


@dataclass(frozen=True)
class Rig:
    run_id: str
    dir: str
    bridge: str
    hosts: tuple[Host, ...]
    identity_file: str  # the client's private key
    known_hosts_file: str  # every host's key, by address
    prefix: str = SUBNET_BASE + "0."  # this rig's /24 (hosts from .11)

    @property
    def controller_address(self) -> str:
        return self.prefix + "1"

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def up(cls, count: int, workdir: str | os.PathLike[str]) -> Rig:
        """Build `count` hosts; on any failure tear down what was built and raise RigError."""
        for tool in ("ip", "unshare", "ssh-keygen", SSHD):
            if shutil.which(tool) is None:
                raise RigError(f"{tool} not found (bash .ci/setup installs openssh-server and iproute2)")
        run_id = secrets.token_hex(2)
        root = Path(workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        with open(_SUBNET_LOCK, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # until our bridge has its address
            rig = cls(run_id, str(root), f"rb-{run_id}", (), str(root / "id_ed25519"),
                      str(root / "known_hosts"), _free_prefix())
            try:
                return rig._build(count, guard)
            except BaseException:
                _down(_saved_or(rig))
                raise

    def _build(self, count: int, guard: IO[str]) -> Rig:
        root = Path(self.dir)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        Path(STATE_ROOT).mkdir(parents=True, exist_ok=True)
        _keygen(self.identity_file)
        (root / "authorized_keys").write_text(Path(self.identity_file + ".pub").read_text())
        _ip("link", "add", self.bridge, "type", "bridge")
        self._save()  # from here on, `down` finds the bridge
        _ip("addr", "add", self.controller_address + "/24", "dev", self.bridge)
        fcntl.flock(guard, fcntl.LOCK_UN)
        _ip("link", "set", self.bridge, "up")
        hosts: list[Host] = []
        known: list[str] = []
        procs: list[subprocess.Popen[bytes]] = []
        for index in range(1, count + 1):
            name = f"h{index}"
            netns, veth, address = f"rcl-{self.run_id}-{name}", f"rv-{self.run_id}-{index}", \
                self.prefix + str(10 + index)
            _ip("netns", "add", netns)
            hosts.append(Host(name, netns, address, veth, 0))
            replace(self, hosts)._save()
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", netns, "addr", "add", address + "/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            hdir = root / name
            hdir.mkdir(exist_ok=True)
            key = str(hdir / "ssh_host_ed25519_key")
            _keygen(key)
            kind, blob = Path(key + ".pub").read_text().split()[:2]
            known.append(f"{address} {kind} {blob}")
            config = hdir / "sshd_config"
            config.write_text(_sshd_config(address, key, str(root / "authorized_keys"), str(hdir)))
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns,
                 "unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--propagation",
                 "private", "--mount-proc",
                 sys.executable, _INIT, STATE_ROOT, str(hdir / "sshd.log"), *_sshd_argv(str(config))],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            procs.append(proc)
            _CHILDREN[proc.pid] = proc
            hosts[-1] = Host(name, netns, address, veth, proc.pid)
            replace(self, hosts)._save()
        Path(self.known_hosts_file).write_text("".join(line + "\n" for line in known))
        for host, proc in zip(hosts, procs, strict=True):
            _wait_ready(f"host {host.name}", proc.stdout, b"ready")
            assert proc.stdout is not None
            proc.stdout.close()
        return replace(self, hosts)

    def _save(self) -> None:
        data = asdict(self)
        data["hosts"] = [asdict(h) for h in self.hosts]
        tmp = Path(self.dir) / "rig.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(Path(self.dir) / "rig.json")

    # --- using ------------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def ssh_argv(self, host: Host, *command: str) -> list[str]:
        """The OpenSSH client's argv for `command` on `host` (each word quoted for the remote shell)."""
        import shlex

        return ["ssh", "-F", "none", "-i", self.identity_file, "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_file}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{host.address}",
                "--", *(shlex.quote(c) for c in command)]

    def exec_argv(self, host: Host, *command: str) -> list[str]:
        """Argv that runs `command` inside `host`'s namespaces directly (no ssh): for test set-up."""
        init = _host_init_pid(host)
        return ["nsenter", "-t", str(init), "-n", "-m", "-p", "--", *command]

    def sshd_pids(self, host: Host) -> list[int]:
        """PIDs (in our namespace) of the host's listening sshd (not its per-connection children)."""
        found = []
        for pid in _children(_host_init_pid(host)):
            with contextlib.suppress(FileNotFoundError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    found.append(pid)
        return found

    def stop_sshd(self, host: Host) -> None:
        """Kill the host's sshd; the host and its QEMUs go on, unreachable."""
        for pid in self.sshd_pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def start_sshd(self, host: Host) -> None:
        """Start sshd again inside the host (after `stop_sshd`), once it listens."""
        config = str(Path(self.dir) / host.name / "sshd_config")
        proc = subprocess.Popen(
            self.exec_argv(host, sys.executable, _INIT_SSHD, *_sshd_argv(config)),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _CHILDREN[proc.pid] = proc
        _wait_ready(f"sshd of {host.name}", proc.stdout, b"ready")
        assert proc.stdout is not None
        proc.stdout.close()

    def kill_host(self, host: Host) -> None:
        """Kill the host's init: every process of the host dies with it."""
        with contextlib.suppress(ProcessLookupError, RigError):
            os.kill(_host_init_pid(host), signal.SIGKILL)

    def down(self) -> None:
        _down(self)


def replace(rig: Rig, hosts: Sequence[Host]) -> Rig:
    return dataclasses.replace(rig, hosts=tuple(hosts))


def _free_prefix() -> str:
    """The first 198.18.N. that no address of this machine is in (N < 256: the first half of the /15)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    used = {int(m) for m in re.findall(r"inet 198\.18\.(\d+)\.", out)}
    free = next((n for n in range(256) if n not in used), None)
    if free is None:
        raise RigError("no free 198.18.N.0/24 for a rig")
    return f"{SUBNET_BASE}{free}."


def load(workdir: str | os.PathLike[str]) -> Rig:
    data = json.loads((Path(workdir) / "rig.json").read_text())
    data["hosts"] = tuple(Host(**h) for h in data["hosts"])
    return Rig(**data)


def _down(rig: Rig) -> None:
    """Kill every host, delete its namespace, veth and the bridge; leaves the key files."""
    for host in rig.hosts:
        if host.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.init_pid, signal.SIGKILL)  # unshare and, via --kill-child, the host
    for pid, proc in list(_CHILDREN.items()):
        if any(h.init_pid == pid for h in rig.hosts):
            proc.wait()
            del _CHILDREN[pid]
    for pid, proc in list(_CHILDREN.items()):  # sshd restarted inside a host: ends with the host
        proc.wait(timeout=5)
        del _CHILDREN[pid]
    for host in rig.hosts:
        subprocess.run(["ip", "link", "del", host.veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", rig.bridge], capture_output=True, check=False)
    with contextlib.suppress(FileNotFoundError):
        (Path(rig.dir) / "rig.json").unlink()


def _saved_or(rig: Rig) -> Rig:
    """The rig as last saved (what was built so far), else `rig`."""
    try:
        return load(rig.dir)
    except (OSError, ValueError):
        return rig


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _host_init_pid(host: Host) -> int:
    """PID (in our namespace) of the host's init: the only child of its `unshare` process."""
    children = _children(host.init_pid)
    if not children:
        raise RigError(f"host {host.name} is not running")
    return children[0]


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RigError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _keygen(path: str) -> None:
    for suffix in ("", ".pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reconciler-rig", "-f", path],
                   check=True, capture_output=True)


def _sshd_config(address: str, host_key: str, authorized_keys: str, hdir: str) -> str:
    return "\n".join([
        f"ListenAddress {address}",
        "Port 22",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"PidFile {hdir}/sshd.pid",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the keys live under a test's tmp directory
        "AllowStreamLocalForwarding yes",
        "AllowTcpForwarding yes",
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "LogLevel INFO",
        "",
    ])


def _sshd_argv(config: str) -> list[str]:
    return [SSHD, "-D", "-e", "-f", config]


def _wait_ready(what: str, stream: IO[bytes] | None, needle: bytes) -> None:
    """Until `needle` appears on `stream` (a pipe), under a deadline; no polling of the port."""
    assert stream is not None
    deadline = time.monotonic() + READY_TIMEOUT
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while needle not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RigError(f"{what} not ready within {READY_TIMEOUT}s: {seen[-300:]!r}")
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise RigError(f"{what} exited before it was ready: {seen[-300:]!r}")
            seen += chunk


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--dir", required=True)
    down = sub.add_parser("down")
    down.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    if args.verb == "up":
        rig = Rig.up(args.hosts, args.dir)
        for h in rig.hosts:
            print(f"{h.name} {h.address} netns={h.netns}")
        print(f"identity={rig.identity_file} known_hosts={rig.known_hosts_file}")
        # sshd's stderr pipe closes with this process; the hosts keep running (their logs are dropped).
        return 0
    _down(load(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
