"""The SSH link to a host's agent, on the rig: real sshd, real network, real QEMU behind a forward."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import __version__
from reconciler.errors import HostKeyRejected, HostUnreachable, RemoteAgentError, RemoteCallError
from reconciler.remote.ssh import SshTarget, open_link
from tests.remote import netns_rig

REPO = Path(__file__).resolve().parents[2]
# The package on the hosts is this checkout (the hosts share this machine's file system).
AGENT = ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent")

pytestmark = [pytest.mark.e2e, pytest.mark.remote]


def target(rig: netns_rig.Rig, on: netns_rig.Host, **changes: Any) -> SshTarget:
    fields: dict[str, Any] = {"node": on.name, "host": on.address, "identity_file": rig.identity_file,
                              "known_hosts_file": rig.known_hosts_file, "connect_timeout": 5.0,
                              "agent_command": AGENT}
    fields.update(changes)
    return SshTarget(**fields)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_open_hello_and_calls(rig: netns_rig.Rig) -> None:
    async def go() -> None:
        link = await open_link(target(rig, rig.hosts[0]))
        try:
            assert link.hello.version == __version__
            results = await asyncio.gather(*(link.call("ping", timeout=5) for _ in range(20)))
            assert {r["version"] for r in results} == {__version__}
            assert await link.call("qemu_version", {"binary": "qemu-system-x86_64"}, timeout=10)
            with pytest.raises(RemoteCallError, match=r"^node h1 .*: nope: nope$"):
                await link.call("nope", timeout=5)
            with pytest.raises(RemoteCallError, match="binary: expected a string"):
                await link.call("qemu_version", {"binary": ["x"]}, timeout=5)
        finally:
            await link.close()
    run(go)


def test_a_wrong_host_key_is_refused_as_a_possible_attack(rig: netns_rig.Rig, tmp_path: Path) -> None:
    h1, h2 = rig.hosts[:2]
    lines = Path(rig.known_hosts_file).read_text().splitlines()
    key_of_h2 = next(line for line in lines if line.startswith(h2.address + " ")).split(" ", 1)[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{h1.address} {key_of_h2}\n")
    where = re.escape(f"node h1 (root@{h1.address}:22): host key not verified ")
    with pytest.raises(HostKeyRejected, match=where + ".*man-in-the-middle"):
        run(lambda: open_link(target(rig, h1, known_hosts_file=str(wrong))))


def test_a_missing_package_names_the_host_and_how_to_install(rig: netns_rig.Rig) -> None:
    missing = (sys.executable, "-m", "reconciler_not_installed_here", "agent")
    with pytest.raises(RemoteAgentError) as info:
        run(lambda: open_link(target(rig, rig.hosts[0], agent_command=missing)))
    msg = str(info.value)
    assert msg.startswith(f"node h1 (root@{rig.hosts[0].address}:22): cannot start ")
    assert "No module named reconciler_not_installed_here" in msg
    assert msg.endswith(f"install it there with: pip install reconciler=={__version__}")


def test_another_version_there_is_refused(rig: netns_rig.Rig) -> None:
    hello = json.dumps({"hello": {"protocol": 1, "version": "0.0.9", "python": "3.11.0"}})
    fake = ("sh", "-c", f"echo '{hello}'; cat >/dev/null")
    with pytest.raises(RemoteAgentError, match=r"reconciler 0\.0\.9 \(protocol 1\) there, "
                                               + __version__.replace(".", r"\.") + r" \(protocol 1\) here"):
        run(lambda: open_link(target(rig, rig.hosts[0], agent_command=fake)))


def test_unreachable_hosts_are_typed(rig: netns_rig.Rig) -> None:
    with pytest.raises(HostUnreachable, match="unreachable: connection refused"):
        run(lambda: open_link(target(rig, rig.hosts[0], port=2222)))
    with pytest.raises(HostUnreachable, match="unreachable: authentication failed"):
        run(lambda: open_link(target(rig, rig.hosts[0], user="nobody")))
    nowhere = rig.prefix + "99"  # on the rig's bridge, no host: ARP fails, no answer
    with pytest.raises(HostUnreachable, match=r"unreachable: (no answer within 1s|.*unreachable)"):
        run(lambda: open_link(target(rig, rig.hosts[0], host=nowhere, connect_timeout=1.0)))


def test_a_connection_lost_mid_call_fails_that_call(rig: netns_rig.Rig) -> None:
    h3 = rig.hosts[2]

    async def go() -> None:
        link = await open_link(target(rig, h3))
        try:
            assert (await link.call("ping", timeout=5))["pid"] > 0
            # Kill the connection's server side (the per-connection sshd processes), not the listener.
            out = subprocess.run(rig.exec_argv(h3, "pkill", "-KILL", "-f", "sshd: root"),
                                 capture_output=True, check=False)
            assert out.returncode == 0
            with pytest.raises(RemoteCallError, match=r"connection was lost|no answer"):
                await link.call("ping", timeout=5)
            assert not link.alive
        finally:
            await link.close()
    run(go)


def test_qmp_travels_over_the_ssh_connection(rig: netns_rig.Rig) -> None:
    """A real QEMU on the host; qemu.qmp on the controller talks to it through a forwarded socket."""
    h2 = rig.hosts[1]
    qmp_path = f"{netns_rig.STATE_ROOT}/t-qmp.sock"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-nodefaults", "-display", "none",
            "-S", "-qmp", f"unix:{qmp_path},server=on,wait=off", "-daemonize",
            "-pidfile", f"{netns_rig.STATE_ROOT}/t.pid"]
    subprocess.run(rig.ssh_argv(h2, *argv), check=True, capture_output=True, timeout=30)

    async def go() -> dict[str, Any]:
        from qemu.qmp import QMPClient

        link = await open_link(target(rig, h2))
        client = QMPClient("t")
        try:
            local = await link.forward_unix(qmp_path)
            await client.connect(local)
            status = await client.execute("query-status")
            return dict(status)  # type: ignore[arg-type]
        finally:
            await client.disconnect()
            await link.close()
    try:
        status = run(go)
    finally:
        subprocess.run(rig.exec_argv(h2, "pkill", "-KILL", "-f", qmp_path), check=False)
    assert status["status"] == "prelaunch"
    assert not Path(qmp_path).exists()  # the socket was on the host, never on the controller


_NAMED_SERVER = """
import os, signal, socket, sys
signal.alarm(120)  # never outlives the test by long, whatever happens to it
servers = []
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(8)
    servers.append((s, path))
print(os.getpid(), flush=True)
import selectors
sel = selectors.DefaultSelector()
for s, path in servers:
    sel.register(s, selectors.EVENT_READ, path)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(key.data.encode() + b"\\n")
        conn.close()
"""


def test_concurrent_forwards_each_reach_their_own_socket(rig: netns_rig.Rig) -> None:
    """Forwards asked for at the same moment get distinct local sockets, each reaching its own remote one
    (two once shared a path: one instance's QMP client reached another instance's QEMU)."""
    host = rig.hosts[0]
    paths = [f"{netns_rig.STATE_ROOT}/fwd-{i}.sock" for i in range(8)]
    pid = ""
    server = subprocess.Popen(rig.exec_argv(host, sys.executable, "-c", _NAMED_SERVER, *paths),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        pid = server.stdout.readline().strip()  # in the host's PID namespace
        assert pid.isdigit()

        async def go() -> None:
            link = await open_link(target(rig, host))
            try:
                locals_ = await asyncio.gather(*(link.forward_unix(p) for p in paths))
                assert len(set(locals_)) == len(paths)
                for remote, local in zip(paths, locals_, strict=True):
                    reader, writer = await asyncio.open_unix_connection(local)
                    assert (await asyncio.wait_for(reader.readline(), 10)).decode().strip() == remote
                    writer.close()
            finally:
                await link.close()
        run(go)
    finally:
        cleanup = ("sh", "-c", 'kill "$1"; shift; rm -f "$@"', "sh", pid, *paths)
        subprocess.run(rig.exec_argv(host, *cleanup), check=False)
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
