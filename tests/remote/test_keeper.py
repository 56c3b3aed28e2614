"""Link keepers on the rig, driven through the CLI: the second run reuses the first run's connection
(one more SSH session in sshd's log, the same keeper process, no asyncssh import), a changed known_hosts
gets a keeper of its own and a wrong key is still refused, a keeper killed in the middle of an apply
fails that apply clearly and the next one converges, the idle timeout and `disconnect` end it, and a
client of another uid is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import fleet as fleet_mod
from reconciler import manifest
from reconciler.remote import keeperclient
from reconciler.remote.link import SshTarget
from tests.remote import netns_rig
from tests.remote.conftest import link_dir
from tests.remote.test_cli_remote import CLI_TIMEOUT, REPO, Fleet, _read_until
from tests.remote.test_cli_remote import fleet as _fleet  # noqa: F401  (the `fleet` fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(300)]

START_TIMEOUT = 30.0  # a keeper's start: an interpreter, asyncssh, a handshake, an agent (loaded host)


def target(made: Fleet, node: str) -> SshTarget:
    desired = manifest.load([str(made.root)]).desired
    assert desired is not None
    return fleet_mod.target_of(desired.nodes[node])


def keeper_pid(made: Fleet, node: str) -> int | None:
    """The PID of `node`'s live keeper, once the one a run spawned has started (or failed)."""
    t = target(made, node)
    if not keeperclient.wait_started(t, START_TIMEOUT):
        return None
    info = keeperclient.keeper_info(t)
    return None if info is None else int(info["pid"])  # type: ignore[call-overload]


def runs_of(made: Fleet, node: str) -> int:
    info = keeperclient.keeper_info(target(made, node))
    assert info is not None
    return int(info["runs"])  # type: ignore[call-overload]


def sessions(rig: netns_rig.Rig, host: netns_rig.Host) -> int:
    """SSH logins the host's sshd has accepted so far (its log, written by the rig's init)."""
    log = Path(rig.dir) / host.name / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey for root")


def wait_gone(pid: int, timeout: float) -> bool:
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def test_the_second_run_reuses_the_keeper_of_the_first(fleet: Fleet, rig: netns_rig.Rig) -> None:
    fleet.declare("web", "node-h1")
    assert fleet.cli("apply", "--yes").returncode == 0  # connects itself, then spawns the keeper
    pid = keeper_pid(fleet, "node-h1")
    assert pid is not None
    h1 = fleet.nodes["node-h1"]
    logins = sessions(rig, h1)
    for n in range(1, 4):
        plan = fleet.cli("plan", "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert runs_of(fleet, "node-h1") == n
    assert keeper_pid(fleet, "node-h1") == pid
    assert sessions(rig, h1) == logins  # three runs, no new SSH session
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "reconciler", "plan", str(fleet.root)],
                            env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
    assert traced.returncode == 0, traced.stderr[-2000:]
    assert "reconciler.remote.link" in traced.stderr  # the trace is of the link's imports...
    assert "asyncssh" not in traced.stderr  # ...and asyncssh is not among them


def test_a_changed_known_hosts_gets_its_own_keeper_and_a_wrong_key_is_still_refused(
        fleet: Fleet, rig: netns_rig.Rig, tmp_path: Path) -> None:
    fleet.declare("web", "node-h1")
    assert fleet.cli("apply", "--yes").returncode == 0
    first = keeper_pid(fleet, "node-h1")
    assert first is not None
    lines = Path(rig.known_hosts_file).read_text().splitlines()
    h1, h2 = fleet.nodes["node-h1"].address, fleet.nodes["node-h2"].address
    h2_key = next(ln for ln in lines if ln.startswith(h2 + " ")).split(" ", 1)[1]
    known = tmp_path / "known_hosts"
    known.write_text("".join((f"{h1} {h2_key}" if ln.startswith(h1 + " ") else ln) + "\n" for ln in lines))
    fleet.known_hosts = str(known)
    fleet.write_nodes()
    done = fleet.cli("plan")
    assert done.returncode == 1, done.stdout + done.stderr
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: node node-h1: host key rejected: ") \
        and "possible attack" in err[0], done.stderr
    assert keeper_pid(fleet, "node-h1") is None  # no keeper for a target whose key is refused
    known.write_text(Path(rig.known_hosts_file).read_text())  # the same path, the right contents again
    assert fleet.cli("plan", "--detailed-exitcode").returncode == 0
    second = keeper_pid(fleet, "node-h1")
    assert second is not None and second != first
    assert not wait_gone(first, 0)  # the old keeper (the old contents) lives on until its idle timeout


def test_a_keeper_killed_in_the_middle_of_apply_fails_it_and_the_next_apply_converges(
        fleet: Fleet) -> None:
    fleet.declare("web", "node-h1")
    assert fleet.cli("apply", "--yes").returncode == 0
    pid = keeper_pid(fleet, "node-h1")
    assert pid is not None
    fleet.declare("web", "node-h1", memory="160M")  # a restart: stop, then start
    fleet.declare("db", "node-h1")
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    with subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--yes"], cwd=fleet.root.parent,
                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        started = _read_until(proc.stdout, b"starting", 60.0)  # an action in flight, over the keeper
        assert b"starting" in started, started
        os.kill(pid, signal.SIGKILL)  # the keeper we started (its PID from its socket's peer)
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 1, started.decode() + out.decode() + err.decode()
    lines = [ln for ln in err.decode().splitlines() if ln.startswith("error: ")]
    assert lines and all("node-h1" in ln for ln in lines), err.decode()
    assert any("the connection was lost" in ln for ln in lines), err.decode()
    assert "Traceback" not in err.decode()
    assert wait_gone(pid, 5)
    again = fleet.cli("apply", "--yes")  # the dead keeper's socket is cleaned up; a new one is started
    assert again.returncode == 0, again.stdout + again.stderr
    assert fleet.cli("plan", "--detailed-exitcode").returncode == 0
    assert len(fleet.qemu_pids("node-h1", "web")) == 1 and len(fleet.qemu_pids("node-h1", "db")) == 1
    fresh = keeper_pid(fleet, "node-h1")
    assert fresh is not None and fresh != pid


def test_the_idle_timeout_and_disconnect_end_keepers(fleet: Fleet) -> None:
    fleet.persist = "3s"
    fleet.write_nodes()
    assert fleet.cli("plan").returncode == 0
    pid = keeper_pid(fleet, "node-h2")
    assert pid is not None
    paths = keeperclient.paths_of(target(fleet, "node-h2"))
    assert wait_gone(pid, 3 + 10)  # three seconds without a run, and some slack on a loaded machine
    assert not os.path.exists(paths.socket)
    fleet.persist = None
    fleet.write_nodes()
    assert fleet.cli("plan").returncode == 0
    pid = keeper_pid(fleet, "node-h2")
    assert pid is not None
    done = fleet.cli("disconnect", "--node", "node-h2", str(fleet.root))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node-h2: closed the link keeper (pid {pid})\n"
    assert wait_gone(pid, 0)  # it has exited when disconnect returns
    again = fleet.cli("disconnect", "--node", "node-h2", str(fleet.root))
    assert again.stdout == "node-h2: no link keeper\n"


def test_a_client_of_another_uid_is_refused(fleet: Fleet, rig: netns_rig.Rig) -> None:
    assert fleet.cli("plan").returncode == 0
    assert keeper_pid(fleet, "node-h3") is not None
    paths = keeperclient.paths_of(target(fleet, "node-h3"))
    where = link_dir(rig)
    os.chmod(where, 0o711)  # let nobody reach the socket, so that the keeper itself must refuse
    os.chmod(paths.socket, 0o666)
    try:
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                 "s.sendall(b'{\"op\": \"info\"}\\n'); print(s.recv(4096).decode(), end='')")
        done = subprocess.run([sys.executable, "-c", probe, paths.socket], user=65534, group=65534,
                              capture_output=True, text=True, timeout=30, check=False)
    finally:
        os.chmod(paths.socket, 0o600)
        os.chmod(where, 0o700)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"error": "refused: uid 65534 is not 0"}\n'
    assert keeperclient.keeper_info(target(fleet, "node-h3")) is not None  # and it serves us still
