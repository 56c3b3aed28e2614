"""Link keepers on the rig, driven through the CLI: the second run reuses the first run's connection
(one more SSH session in sshd's log, the same keeper process, no asyncssh import), a changed known_hosts
gets a keeper of its own and a wrong key is still refused, a keeper killed in the middle of an apply
fails that apply clearly and the next one converges, the idle timeout and `disconnect` end it, and a
client of another uid is refused.
"""

from __future__ import annotations

import os
import shlex
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
from tests.remote.test_cli_remote import CLI_TIMEOUT, REPO, Fleet, _read_until, plan_unreachable
from tests.remote.test_cli_remote import fleet as _fleet  # noqa: F401  (the fixture, by this name here)

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(300)]

START_TIMEOUT = 30.0  # a keeper's start: an interpreter, asyncssh, a handshake, an agent (loaded host)


@pytest.fixture
def made(_fleet: Fleet) -> Fleet:  # noqa: F811
    """test_cli_remote's `fleet`: a tree of the rig's three hosts, checked and cleaned after the test."""
    return _fleet


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


def test_the_second_run_reuses_the_keeper_of_the_first(made: Fleet, rig: netns_rig.Rig) -> None:
    made.declare("web", "node-h1")
    assert made.cli("apply", "--yes").returncode == 0  # connects itself, then spawns the keeper
    pid = keeper_pid(made, "node-h1")
    assert pid is not None
    h1 = made.nodes["node-h1"]
    logins = sessions(rig, h1)
    for n in range(1, 4):
        plan = made.cli("plan", "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert runs_of(made, "node-h1") == n
    assert keeper_pid(made, "node-h1") == pid
    assert sessions(rig, h1) == logins  # three runs, no new SSH session
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "reconciler", "plan", str(made.root)],
                            env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
    assert traced.returncode == 0, traced.stderr[-2000:]
    assert "reconciler.remote.link" in traced.stderr  # the trace is of the link's imports...
    assert "asyncssh" not in traced.stderr  # ...and asyncssh is not among them


def test_a_changed_known_hosts_gets_its_own_keeper_and_a_wrong_key_is_still_refused(
        made: Fleet, rig: netns_rig.Rig, tmp_path: Path) -> None:
    right = Path(rig.known_hosts_file).read_text()
    known = tmp_path / "known_hosts"
    known.write_text(right)
    made.known_hosts = str(known)
    made.write_nodes()
    made.declare("web", "node-h1")
    assert made.cli("apply", "--yes").returncode == 0
    first = keeper_pid(made, "node-h1")
    assert first is not None
    lines = right.splitlines()
    h1, h2 = made.nodes["node-h1"].address, made.nodes["node-h2"].address
    h2_key = next(ln for ln in lines if ln.startswith(h2 + " ")).split(" ", 1)[1]
    # The same file, other contents: h1's key is now h2's. The keeper of the old contents must not serve.
    known.write_text("".join((f"{h1} {h2_key}" if ln.startswith(h1 + " ") else ln) + "\n" for ln in lines))
    done = made.cli("plan")
    assert done.returncode == 1, done.stdout + done.stderr
    err = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: node node-h1: host key rejected: ") \
        and "possible attack" in err[0], done.stderr
    assert keeper_pid(made, "node-h1") is None  # and no keeper is started for a key that was refused
    known.write_text(right)  # the old contents again: the old keeper (still alive) serves again
    assert made.cli("plan", "--detailed-exitcode").returncode == 0
    assert keeper_pid(made, "node-h1") == first
    assert runs_of(made, "node-h1") == 1


def test_a_keeper_killed_in_the_middle_of_apply_fails_it_and_the_next_apply_converges(
        made: Fleet) -> None:
    made.declare("web", "node-h1")
    assert made.cli("apply", "--yes").returncode == 0
    pid = keeper_pid(made, "node-h1")
    assert pid is not None
    made.declare("web", "node-h1", memory="160M")  # a restart: stop, then start
    made.declare("db", "node-h1")
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    with subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--yes"], cwd=made.root.parent,
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
    again = made.cli("apply", "--yes")  # the dead keeper's socket is cleaned up; a new one is started
    assert again.returncode == 0, again.stdout + again.stderr
    assert made.cli("plan", "--detailed-exitcode").returncode == 0
    assert len(made.qemu_pids("node-h1", "web")) == 1 and len(made.qemu_pids("node-h1", "db")) == 1
    fresh = keeper_pid(made, "node-h1")
    assert fresh is not None and fresh != pid


def test_the_idle_timeout_and_disconnect_end_keepers(made: Fleet) -> None:
    made.persist = "3s"
    made.write_nodes()
    assert made.cli("plan").returncode == 0
    pid = keeper_pid(made, "node-h2")
    assert pid is not None
    paths = keeperclient.paths_of(target(made, "node-h2"))
    assert wait_gone(pid, 3 + 10)  # three seconds without a run, and some slack on a loaded machine
    assert not os.path.exists(paths.socket)
    made.persist = None
    made.write_nodes()
    assert made.cli("plan").returncode == 0
    pid = keeper_pid(made, "node-h2")
    assert pid is not None
    done = made.cli("disconnect", "--node", "node-h2", str(made.root))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node-h2: closed the link keeper (pid {pid})\n"
    assert wait_gone(pid, 0)  # it has exited when disconnect returns
    again = made.cli("disconnect", "--node", "node-h2", str(made.root))
    assert again.stdout == "node-h2: no link keeper\n"


def test_a_client_of_another_uid_is_refused(made: Fleet, rig: netns_rig.Rig) -> None:
    assert made.cli("plan").returncode == 0
    assert keeper_pid(made, "node-h3") is not None
    paths = keeperclient.paths_of(target(made, "node-h3"))
    where = link_dir(rig)
    os.chmod(where, 0o711)  # let nobody reach the socket, so that the keeper itself must refuse
    os.chmod(paths.socket, 0o666)
    # nobody reaches the directory through a descriptor we opened (the test's tmp path above it is ours)
    dirfd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    try:
        probe = ("import os,socket,sys; os.fchdir(int(sys.argv[2])); s=socket.socket(socket.AF_UNIX); "
                 "s.connect(sys.argv[1]); print(s.recv(4096).decode(), end='')")  # refused before it asks
        python = "/usr/bin/python3"  # the system's: ours, under /root, is not for nobody to run
        if not os.access(python, os.X_OK):
            pytest.skip(f"{python} is needed to connect as another uid")
        done = subprocess.run([python, "-I", "-c", probe, os.path.basename(paths.socket), str(dirfd)],
                              user=65534, group=65534, extra_groups=[], pass_fds=(dirfd,), cwd="/",
                              capture_output=True, text=True, timeout=30, check=False)
    finally:
        os.close(dirfd)
        os.chmod(paths.socket, 0o600)
        os.chmod(where, 0o700)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"error": "refused: uid 65534 is not 0"}\n'
    assert keeperclient.keeper_info(target(made, "node-h3")) is not None  # and it serves us still


def test_a_link_down_under_a_keeper_is_unreachable_as_without_one(made: Fleet) -> None:
    assert made.cli("plan").returncode == 0
    pid = keeper_pid(made, "node-h2")
    assert pid is not None
    plan_unreachable(made, "node-h2")
    assert wait_gone(pid, 10)  # a keeper whose connection went quiet ends
    assert made.cli("plan", "--detailed-exitcode").returncode == 0  # and the next run connects anew


def test_a_link_down_while_the_spare_starts_is_unreachable(made: Fleet) -> None:
    """The spare's start (after the last run) has its channel open but no hello yet when the link goes
    down: the next run is told the host is unreachable, not that the agent is slow."""
    slow = " ".join(shlex.quote(w) for w in made.agent)
    made.agent = ["sh", "-c", f"sleep 2; exec {slow}"]  # each agent's hello comes 2 s late
    made.write_nodes()
    assert made.cli("plan").returncode == 0  # connects itself, spawns the keeper
    pid = keeper_pid(made, "node-h2")
    assert pid is not None
    assert made.cli("plan").returncode == 0  # through the keeper; at its end the next spare starts
    plan_unreachable(made, "node-h2")
    assert wait_gone(pid, 10)
