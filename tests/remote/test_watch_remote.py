"""The watch daemon (`reconciler watch`, a subprocess) over three remote hosts of the rig.

- A QEMU killed with SIGKILL on host h2 (inside the host, not through us) is seen at once (the agent
  there answers the daemon's exit watch the moment it exits) and restarted by the daemon (runStrategy
  Always); a QEMU quit over QMP from outside is seen through the forwarded watcher socket (a SHUTDOWN
  event, then the exit) and restarted too; a manifest edit reaches host h3.
- A host whose sshd is stopped (the listener and the daemon's own session) is reported: a log event,
  the status file and the metrics; nothing is done to its instance; once sshd is back the daemon
  reconnects by itself, the next pass applies the edit made meanwhile, and its QEMU's exits are watched
  again over the new link.

Afterwards: one QEMU per instance across the hosts, and once the daemon stops no agent is left on any
host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest

from tests.remote import netns_rig
from tests.remote.test_cli_remote import REPO
from tests.remote.test_cli_remote import Fleet as Hosts
from tests.watch.daemon_kit import Daemon, metric

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(300)]

NAMES = {"web": "node-h1", "db": "node-h2", "cache": "node-h3"}
PUSHED = 10.0  # seconds: an exit pushed by the host is seen long before the 30 s resync


@pytest.fixture
def hosts(rig: netns_rig.Rig, guest: Guest, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Hosts]:
    made = Hosts(rig, guest, tmp_path / "manifests", "w-" + request.node.name[:30])
    # The daemon keeps its own links; the CLI runs here (`qmp`) keep none, so that the agents on the
    # hosts are the daemon's alone (`agents_left`: a link keeper would hold a spare agent there).
    made.persist = "0s"
    made.write_nodes()
    try:
        yield made
    finally:
        for host in rig.hosts:
            if not rig.sshd_pids(host):
                rig.start_sshd(host)
        made.teardown()
        for node in made.nodes:  # nothing of ours left running on any host
            # "[-]": the pattern must not match `timeout`'s own command line, which carries it (pidwait
            # leaves out only itself: each wait lasted its whole 10 s).
            made.on_host(node, "timeout", "10", "pidwait", "-f", "--", f"[-]pidfile {made.state}/")
            left = made.on_host(node, "pgrep", "-a", "-f", "--", f"[-]pidfile {made.state}/")
            assert left == "", (node, left)
        assert agents_left(made) == []


@pytest.fixture
def daemon(hosts: Hosts, tmp_path: Path) -> Iterator[Daemon]:
    for name, node in NAMES.items():
        hosts.declare(name, node, runStrategy="Always")
    d = Daemon(hosts.root, "--status-file", str(tmp_path / "watch-status.json"), "--backoff-base", "0.5",
               env={"PYTHONPATH": str(REPO)})
    try:
        d.ready()
        d.actions("start", list(NAMES), timeout=90)
        yield d
    finally:
        if d.proc.poll() is None:
            d.stop()
        else:
            d.close()


def one_qemu_each(hosts: Hosts) -> dict[str, int]:
    """Every instance runs exactly once, on its node, and nowhere else."""
    pids = {}
    for name, node in NAMES.items():
        where = {n: hosts.qemu_pids(n, name) for n in hosts.nodes}
        counts = {n: len(p) for n, p in where.items()}
        assert counts == {n: int(n == node) for n in hosts.nodes}, (name, where)
        pids[name] = where[node][0]
    return pids


def agents_left(hosts: Hosts) -> list[str]:
    """Agents still running on the hosts, once each has had 10 s to end (pidwait: a pidfd, no polling)."""
    for n in hosts.nodes:
        hosts.on_host(n, "timeout", "10", "pidwait", "-f", "[r]econciler agent")  # not timeout's own argv
    return [f"{n}: {out}" for n in hosts.nodes
            if (out := hosts.on_host(n, "pgrep", "-a", "-f", "[r]econciler agent").strip())]


def test_a_killed_qemu_is_restarted_and_an_edit_reaches_its_host(hosts: Hosts, daemon: Daemon,
                                                                 tmp_path: Path) -> None:
    d = daemon
    before = one_qemu_each(hosts)
    # SIGKILL inside host h2: a crash, pushed by the host's agent (no resync, no poll).
    d.mark()
    hosts.on_host("node-h2", "kill", "-KILL", str(before["db"]))
    ev = d.wait("qemu-exit", PUSHED, instance="db", node="node-h2")
    assert ev["kind"] == "crash", ev
    started = d.action("db", "start", PUSHED)
    assert started["reason"] == "crashed" and started["node"] == "node-h2", started
    d.wait("reconcile", where=lambda e: e["actions"] == 0)  # the follow-up pass: nothing left to do
    after = one_qemu_each(hosts)
    assert after["db"] != before["db"] and after["web"] == before["web"]

    # A quit over QMP from outside: its SHUTDOWN comes over the forwarded watcher socket, then the exit.
    d.mark()
    done = hosts.cli("qmp", "web", "quit", str(hosts.root))
    assert done.returncode == 0, done.stdout + done.stderr
    # The SHUTDOWN (on the forwarded watcher socket) and the exit (the agent's answer) travel on two
    # channels of the connection: either may come first. Both say the host stopped it, not a crash.
    ev = d.wait("qemu-exit", PUSHED, instance="web")
    assert ev["kind"] == "stopped-by-host", ev
    assert "SHUTDOWN by the host" in ev["detail"] or "pidfile removed" in ev["detail"], ev
    d.action("web", "start", PUSHED)

    # A manifest edit reaches host h3: cache is restarted there with its new memory.
    d.mark()
    hosts.declare("cache", "node-h3", runStrategy="Always", memory="160M")
    ev = d.wait("action", 60, instance="cache")
    assert ev["outcome"] == "done" and ev["node"] == "node-h3", ev
    record = hosts.record("node-h3", "cache")
    assert record is not None and record["spec"]["memory_mib"] == 160  # type: ignore[index]
    d.wait("reconcile", where=lambda e: e["actions"] == 0)
    one_qemu_each(hosts)
    assert metric(d.metrics(), "reconciler_qemu_exits_total", kind="crash") == 1
    assert d.stop() == 0
    assert agents_left(hosts) == []  # the daemon's links are closed, and their agents ended with them
    one_qemu_each(hosts)  # the VMs keep running without the daemon


def test_a_host_whose_sshd_is_stopped_is_reported_then_reconciled_once_back(
        hosts: Hosts, daemon: Daemon, rig: netns_rig.Rig, tmp_path: Path) -> None:
    d = daemon
    before = one_qemu_each(hosts)
    h3 = hosts.nodes["node-h3"]
    d.mark()
    # sshd stopped: the listener, and the session of the daemon's link with it (systemctl stop ssh
    # leaves sessions alone; a host going down does not).
    hosts.on_host("node-h3", "pkill", "-KILL", "-x", "sshd")
    lost = d.wait("host-lost", PUSHED, nodes="node-h3")
    assert lost["host"] == f"root@{h3.address}:22", lost
    ev = d.wait("node-unreachable", PUSHED, node="node-h3")
    assert ev["reach"] == "unreachable", ev
    held = d.wait("unreachable-held", PUSHED, instance="cache")
    assert held["node"] == "node-h3" and "node-h3 is unreachable" in held["reason"], held
    d.wait("reconcile")
    status = json.loads((tmp_path / "watch-status.json").read_text())
    assert [u for u in status["unreachable"] if u.startswith("node node-h3: unreachable: ")], status
    assert metric(d.metrics(), "reconciler_nodes_unreachable") == 1

    # While it is down: an edit of cache is held (nothing is done to h3), the other hosts go on.
    d.mark()
    hosts.declare("cache", "node-h3", runStrategy="Always", memory="160M")
    hosts.declare("web", "node-h1", runStrategy="Always", memory="160M")
    d.action("web", "restart", 60)
    assert hosts.qemu_pids("node-h3", "cache") == [before["cache"]]
    record = hosts.record("node-h3", "cache")
    assert record is not None and record["spec"]["memory_mib"] == 128  # type: ignore[index]

    # sshd back: the daemon reconnects by itself (backoff) and the next pass reconciles h3.
    rig.start_sshd(h3)
    d.wait("host-reconnected", 60, nodes="node-h3")
    d.wait("node-reachable", 30, node="node-h3")
    ev = d.wait("action", 60, instance="cache")
    assert ev["outcome"] == "done" and ev["node"] == "node-h3", ev
    record = hosts.record("node-h3", "cache")
    assert record is not None and record["spec"]["memory_mib"] == 160  # type: ignore[index]
    d.wait("reconcile", where=lambda e: e["actions"] == 0)
    after = one_qemu_each(hosts)
    assert after["db"] == before["db"]  # untouched all along
    # The exits on h3 are watched again, over the new link.
    d.mark()
    hosts.on_host("node-h3", "kill", "-KILL", str(after["cache"]))
    assert d.wait("qemu-exit", PUSHED, instance="cache", node="node-h3")["kind"] == "crash"
    d.action("cache", "start", PUSHED)
    d.wait("reconcile", where=lambda e: e["actions"] == 0)
    one_qemu_each(hosts)
    assert metric(d.metrics(), "reconciler_nodes_unreachable") == 0
    status = json.loads((tmp_path / "watch-status.json").read_text())
    assert status["unreachable"] == [], status
    assert d.stop() == 0
    assert agents_left(hosts) == []
