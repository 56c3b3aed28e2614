"""The CLI across three remote hosts of the rig, driven as a user would: `apply` of instances on three
hosts, the next `plan` empty, `status` and `node-info` showing every host; then the faults: a host whose
sshd is stopped (before `plan` and `apply`), a host key that does not match, a host without the agent.

An unreachable host is reported, one line per node, the run exits 1, the other hosts are reconciled, and
nothing that may run on the unreachable host is started elsewhere or stopped there.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from conftest import Guest
from executor.kit import BOOT_TIMEOUT

from tests.remote import netns_rig, rig_look

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
AGENT = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent"]
CLI_TIMEOUT = 120


class Fleet:
    """A manifest tree whose three nodes are the rig's hosts, and the CLI run on it."""

    def __init__(self, rig: netns_rig.Rig, guest: Guest, root: Path, tag: str) -> None:
        self.rig, self.guest, self.root, self.tag = rig, guest, root, tag
        self.state = f"{netns_rig.STATE_ROOT}/{tag}"
        self.nodes: dict[str, netns_rig.Host] = {f"node-{h.name}": h for h in rig.hosts}
        root.mkdir(parents=True, exist_ok=True)
        self.known_hosts = rig.known_hosts_file
        self.agent = AGENT
        self.persist: str | None = None  # ssh.persist of every node (None: the default, 60s)

    def write_nodes(self) -> None:
        docs = []
        for name, host in self.nodes.items():
            ssh = {"host": host.address, "identityFile": self.rig.identity_file,
                   "knownHostsFile": self.known_hosts, "connectTimeout": "3s", "agentCommand": self.agent}
            if self.persist is not None:
                ssh["persist"] = self.persist
            docs.append({"apiVersion": "reconciler/v1", "kind": "Node", "metadata": {"name": name},
                         "spec": {"address": host.address, "stateDir": self.state, "accelerator": "tcg",
                                  "ssh": ssh}})
        (self.root / "nodes.yaml").write_text("---\n".join(json.dumps(d) + "\n" for d in docs))

    def declare(self, name: str, node: str, **spec: object) -> None:
        kernel = {"path": str(self.guest.kernel), "initrd": str(self.guest.initrd), "root": "/dev/ram0",
                  "cmdline": f"quiet panic=-1 reconciler.tag={name}"}
        body = {"node": node, "memory": "128M", "serialConsole": True, "shutdownTimeout": "10s",
                "kernel": kernel, **spec}
        doc = {"apiVersion": "reconciler/v1", "kind": "Instance", "metadata": {"name": name}, "spec": body}
        (self.root / f"{name}.yaml").write_text(json.dumps(doc) + "\n")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=self.root.parent, env=env,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)

    def wait_keepers(self) -> None:
        """Until the link keepers the last run spawned listen, so that the next run goes through them."""
        from reconciler import fleet, manifest
        from reconciler.remote import keeperclient

        desired = manifest.load([str(self.root)]).desired
        assert desired is not None
        for spec in desired.nodes.values():
            assert keeperclient.wait_started(fleet.target_of(spec), 30.0), spec.name

    def on_host(self, node: str, *argv: str) -> str:
        done = subprocess.run(self.rig.exec_argv(self.nodes[node], *argv), capture_output=True, text=True,
                              timeout=30, check=False)
        return done.stdout

    def qemu_pids(self, node: str, instance: str) -> list[int]:
        """PIDs (in the host's namespace) of the host's QEMUs with `instance`'s pidfile."""
        pidfile = f"{self.state}/instances/{instance}/qemu.pid"
        out = self.on_host(node, "pgrep", "-f", "--", f"-pidfile {pidfile}")
        return sorted(int(p) for p in out.split())

    def record(self, node: str, instance: str) -> dict[str, object] | None:
        text = self.on_host(node, "cat", f"{self.state}/instances/{instance}/record.json")
        return json.loads(text) if text.strip() else None

    def copies(self) -> dict[str, list[str]]:
        """Every live QEMU of this tree, across all hosts: instance name -> the nodes it runs on."""
        found: dict[str, list[str]] = {}
        for node in self.nodes:
            out = self.on_host(node, "pgrep", "-af", "--", f"-pidfile {self.state}/instances/")
            for line in out.splitlines():
                words = line.split()
                pidfile = words[words.index("-pidfile") + 1]
                found.setdefault(pidfile.split("/")[-2], []).append(node)
        return found

    def teardown(self) -> None:
        """Kill every QEMU of this tree on every host and wait for each to exit (pidwait: a pidfd each;
        a SIGKILLed QEMU may still be tearing down when pkill returns), then remove the state."""
        pattern = f"-pidfile {self.state}/"
        for node in self.nodes:
            self.on_host(node, "pkill", "-KILL", "-f", "--", pattern)
            self.on_host(node, "pidwait", "-f", "--", pattern)  # under on_host's deadline
            self.on_host(node, "rm", "-rf", self.state)


@pytest.fixture
def fleet(rig: netns_rig.Rig, guest: Guest, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Fleet]:
    made = Fleet(rig, guest, tmp_path / "manifests", request.node.name[:40].replace("[", "-").strip("]"))
    made.write_nodes()
    try:
        yield made
        twice = {name: nodes for name, nodes in made.copies().items() if len(nodes) > 1}
        assert not twice, f"instances with more than one QEMU across the hosts: {twice}"
    finally:
        for host in rig.hosts:  # a test that stopped an sshd gets it back for the next one
            if not rig.sshd_pids(host):
                rig.start_sshd(host)
        made.teardown()
    assert made.copies() == {}, "QEMUs left behind"


def _three(fleet: Fleet) -> None:
    fleet.declare("web", "node-h1")
    fleet.declare("db", "node-h2")
    fleet.declare("cache", "node-h3")


def test_apply_across_three_hosts_then_plan_is_empty_and_status_shows_every_host(fleet: Fleet) -> None:
    _three(fleet)
    done = fleet.cli("apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete: 3 started" in done.stdout, done.stdout
    for name, node in (("web", "node-h1"), ("db", "node-h2"), ("cache", "node-h3")):
        assert len(fleet.qemu_pids(node, name)) == 1, (name, node)
        record = fleet.record(node, name)
        assert record is not None and record["node"] == node
        others = [n for n in fleet.nodes if n != node]
        assert all(fleet.qemu_pids(n, name) == [] for n in others)
    plan = fleet.cli("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout
    status = fleet.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {(r["name"], r["node"]): r for r in json.loads(status.stdout)["instances"]}
    assert {k: v["actual"] for k, v in rows.items() if v["desired"] != "-"} == {
        ("web", "node-h1"): "running", ("db", "node-h2"): "running", ("cache", "node-h3"): "running"}
    one = fleet.cli("status", "--node", "node-h2")
    assert one.returncode == 0 and "db" in one.stdout and "web" not in one.stdout, one.stdout
    info = fleet.cli("node-info", "--json")
    assert info.returncode == 0, info.stderr
    nodes = {n["name"]: n for n in json.loads(info.stdout)["nodes"]}
    assert sorted(nodes) == ["node-h1", "node-h2", "node-h3"]
    assert all(n["instances_running"] == 1 and n["qemu_version"] for n in nodes.values())


def test_a_host_whose_sshd_is_stopped_is_reported_and_the_others_are_reconciled(
        fleet: Fleet, rig: netns_rig.Rig) -> None:
    # Without link keepers: a keeper's open connection would survive sshd (as an OpenSSH master does),
    # and this test is about a host that cannot be connected to (test_keeper.py covers keepers' faults).
    fleet.persist = "0s"
    fleet.write_nodes()
    _three(fleet)
    assert fleet.cli("apply", "--yes").returncode == 0
    cache_pid = fleet.qemu_pids("node-h3", "cache")
    rig.stop_sshd(fleet.nodes["node-h3"])
    # Before plan: the node is unreachable, nothing is planned on it, exit 1, one line on stderr.
    plan = fleet.cli("plan")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    lines = [ln for ln in plan.stderr.splitlines() if ln.startswith("error: ")]
    assert lines == [f"error: node node-h3: unreachable: root@{fleet.nodes['node-h3'].address}:22: "
                     "connection refused"], plan.stderr
    assert "Unreachable nodes" in plan.stdout and "No changes on the reachable nodes" in plan.stdout
    # apply: web changes on h1 (restart), cache is moved to h2 by the manifest: held (it may run on h3).
    fleet.declare("web", "node-h1", memory="160M")
    fleet.declare("cache", "node-h2")
    fleet.declare("new", "node-h1")  # never started anywhere, but it may run on h3: held too
    done = fleet.cli("apply", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cache on node-h2: not running on any reachable node" in done.stdout, done.stdout
    assert "new on node-h1: not running on any reachable node" in done.stdout, done.stdout
    record = fleet.record("node-h1", "web")
    assert record is not None and record["spec"]["memory_mib"] == 160  # type: ignore[index]
    assert fleet.qemu_pids("node-h2", "cache") == [] and fleet.qemu_pids("node-h1", "new") == []
    assert fleet.qemu_pids("node-h3", "cache") == cache_pid  # untouched on the unreachable host
    status = fleet.cli("status")
    assert status.returncode == 1 and "node node-h3: unreachable" in status.stdout, status.stdout
    # The host is back: the next apply converges (cache migrates h3 -> h2, new starts).
    rig.start_sshd(fleet.nodes["node-h3"])
    done = fleet.cli("apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.qemu_pids("node-h3", "cache") == [] and len(fleet.qemu_pids("node-h2", "cache")) == 1
    assert len(fleet.qemu_pids("node-h1", "new")) == 1
    assert fleet.cli("plan", "--detailed-exitcode").returncode == 0


def test_a_host_key_that_does_not_match_is_refused_as_a_possible_attack(
        fleet: Fleet, rig: netns_rig.Rig, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    lines = Path(rig.known_hosts_file).read_text().splitlines()
    h2 = fleet.nodes["node-h2"].address
    h1_key = next(ln for ln in lines if ln.startswith(fleet.nodes["node-h1"].address + " ")).split(" ", 1)[1]
    wrong.write_text("".join((f"{h2} {h1_key}" if ln.startswith(h2 + " ") else ln) + "\n" for ln in lines))
    fleet.declare("web", "node-h1")
    assert fleet.cli("apply", "--yes").returncode == 0
    before = fleet.qemu_pids("node-h1", "web")
    fleet.known_hosts = str(wrong)
    fleet.write_nodes()
    fleet.declare("web", "node-h1", memory="160M")
    done = fleet.cli("apply", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: node node-h2: host key rejected: ") \
        and "possible attack" in err[0], done.stderr
    after = fleet.qemu_pids("node-h1", "web")  # the other hosts are reconciled: web restarted
    assert len(after) == 1 and after != before, (before, after)


def test_a_host_whose_link_is_down_before_plan_is_unreachable(fleet: Fleet) -> None:
    fleet.persist = "0s"  # a fresh connection's deadline (a keeper's handoff ping adds 2s before it)
    fleet.write_nodes()
    plan_unreachable(fleet, "node-h2")


def plan_unreachable(fleet: Fleet, node: str) -> None:
    """`plan` with `node`'s link down fails with one error: the node does not answer within its 3 s."""
    host = fleet.nodes[node]
    subprocess.run(["ip", "link", "set", host.veth, "down"], check=True)
    try:
        done = fleet.cli("plan")
    finally:
        subprocess.run(["ip", "link", "set", host.veth, "up"], check=True)
    assert done.returncode == 1, done.stdout + done.stderr
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    expected = f"error: node {node}: unreachable: root@{host.address}:22: no answer within 3s"
    assert err == [expected], done.stderr


def test_a_host_without_the_agent_is_reported_with_how_to_install_it(fleet: Fleet) -> None:
    fleet.agent = ["/nonexistent/bin/reconciler", "agent"]
    fleet.write_nodes()
    done = fleet.cli("plan")
    assert done.returncode == 1, done.stdout + done.stderr
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 3, done.stderr
    assert all(": no agent: " in ln and "pip install reconciler==" in ln for ln in err), done.stderr
    assert "Traceback" not in done.stderr


def test_console_attaches_over_ssh_and_ctrl_bracket_detaches(fleet: Fleet) -> None:
    fleet.declare("web", "node-h2")
    assert fleet.cli("apply", "--yes").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "console", "web"], cwd=fleet.root.parent,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        hello = _read_until(proc.stderr, b"Escape character is ^]", 60.0)
        assert b"Connected to web on node-h2." in hello, hello
        proc.stdin.write(b"report\n")  # the guest answers on its console (buffered until its init reads)
        proc.stdin.flush()
        seen = _read_until(proc.stdout, b"reconciler-guest: report", 90.0)
        assert b"reconciler-guest: report" in seen, seen[-500:]
        proc.stdin.write(b"\x1d")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        assert b"detached" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # closes the pipes


def _read_until(stream: IO[bytes], needle: bytes, timeout: float) -> bytes:
    """What `stream` gave until `needle` (or its end, or the deadline): blocking reads under select."""
    got = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while needle not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("fault", ["link-down", "sshd-killed"])
def test_a_host_lost_in_the_middle_of_apply_is_reported_and_the_next_apply_converges(
        fleet: Fleet, rig: netns_rig.Rig, fault: str) -> None:
    _three(fleet)
    assert fleet.cli("apply", "--yes").returncode == 0
    fleet.wait_keepers()  # the apply below goes through them: the heartbeat works end to end
    cache_pid = fleet.qemu_pids("node-h3", "cache")
    fleet.declare("web", "node-h1", memory="160M")
    fleet.declare("db", "node-h2", memory="160M")
    h3 = fleet.nodes["node-h3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    with subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--yes"], cwd=fleet.root.parent,
                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        started = _read_until(proc.stdout, b"stopping", 60.0)  # the first action's progress: mid-apply
        assert b"stopping" in started, started
        if fault == "link-down":
            subprocess.run(["ip", "link", "set", h3.veth, "down"], check=True)
        else:  # every sshd of the host, the one serving our connection too: the link ends at once
            subprocess.run(rig.exec_argv(h3, "pkill", "-KILL", "sshd"), check=False)
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    try:
        assert proc.returncode == 1, started.decode() + out.decode() + err.decode()
        lines = [ln for ln in err.decode().splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and lines[0].startswith("error: node node-h3: unreachable: "), err.decode()
        assert "Apply complete: 0 started, 0 stopped, 2 restarted" in out.decode(), out.decode()
    finally:
        if fault == "link-down":
            subprocess.run(["ip", "link", "set", h3.veth, "up"], check=True)
        else:
            rig.start_sshd(h3)
    assert fleet.qemu_pids("node-h3", "cache") == cache_pid  # nothing on the lost host stopped or doubled
    for name, node in (("web", "node-h1"), ("db", "node-h2")):
        record = fleet.record(node, name)
        assert record is not None and record["spec"]["memory_mib"] == 160  # type: ignore[index]
    again = fleet.cli("apply", "--yes")  # may wait for the lost link's agent to let go of h3's lock
    assert again.returncode == 0, again.stdout + again.stderr
    assert fleet.cli("plan", "--detailed-exitcode").returncode == 0
    assert fleet.qemu_pids("node-h3", "cache") == cache_pid


def test_a_restart_and_an_acpi_stop_on_a_remote_host(fleet: Fleet, rig: netns_rig.Rig) -> None:
    fleet.declare("web", "node-h3")
    assert fleet.cli("apply", "--yes").returncode == 0
    host = fleet.nodes["node-h3"]
    serial = f"{fleet.state}/instances/web/serial.log"
    with rig_look.HostLog(rig, host, serial) as log:
        log.wait_for("reconciler-guest: ready web", BOOT_TIMEOUT)
    (first,) = fleet.qemu_pids("node-h3", "web")
    fleet.declare("web", "node-h3", memory="160M")
    done = fleet.cli("apply", "--yes")
    assert done.returncode == 0 and "1 restarted" in done.stdout, done.stdout + done.stderr
    (second,) = fleet.qemu_pids("node-h3", "web")
    assert second != first
    with rig_look.HostLog(rig, host, serial) as log:  # the new process's log: the guest booted again
        log.wait_for("reconciler-guest: ready web", BOOT_TIMEOUT)
        fleet.declare("web", "node-h3", memory="160M", runStrategy="Halted")
        done = fleet.cli("apply", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "(ACPI power-off)" in done.stdout, done.stdout  # the guest's power-off was seen
        log.wait_for("reconciler-guest: power button, powering off", 10)  # the guest's words, on its host
    assert fleet.qemu_pids("node-h3", "web") == []
    record = fleet.record("node-h3", "web")
    assert record is not None and record["stop_cause"] == "reconciler", record
