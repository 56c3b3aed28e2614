"""Looking inside a rig host from a test: its files, its processes, its serial logs.

Why: a remote host's state directory is in its own mount namespace and its QEMUs in its own PID
namespace, so the controller cannot see either by accident. A test looks on purpose, through the rig's
`exec_argv` (nsenter into the host), never through a path of its own. The reliability invariants
(tests/reliability/invariants.py) run inside the host the same way, so they judge the host's own view.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.remote import netns_rig

REPO = Path(__file__).resolve().parents[2]
EXEC_TIMEOUT = 60.0

Needle = str | re.Pattern[str]


def run_in(rig: netns_rig.Rig, host: netns_rig.Host, *command: str, check: bool = True,
           timeout: float = EXEC_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`command` inside `host`'s namespaces, its output captured."""
    return subprocess.run(rig.exec_argv(host, *command), capture_output=True, text=True, check=check,
                          timeout=timeout)


def python_in(rig: netns_rig.Rig, host: netns_rig.Host, code: str, *args: str) -> str:
    """Run `code` with this repository's Python inside `host` (argv: `args`); its stdout."""
    env = f"PYTHONPATH={REPO}"
    return run_in(rig, host, "env", env, sys.executable, "-c", code, *args).stdout


def read_file(rig: netns_rig.Rig, host: netns_rig.Host, path: str) -> str | None:
    """The file at `path` on `host`, None when absent."""
    done = run_in(rig, host, "cat", "--", path, check=False)
    return done.stdout if done.returncode == 0 else None


def popen_in(rig: netns_rig.Rig, host: netns_rig.Host, *command: str) -> subprocess.Popen[bytes]:
    """`command` in `host`'s network and mount namespaces (not its PID namespace: nsenter then execs
    the command itself, where it would fork to enter a PID namespace, so killing the returned process
    kills the command and leaves nothing behind in the host). stdout is a pipe."""
    argv = rig.exec_argv(host)
    argv.remove("-p")
    return subprocess.Popen([*argv, *command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def exists(rig: netns_rig.Rig, host: netns_rig.Host, path: str) -> bool:
    return run_in(rig, host, "test", "-e", path, check=False).returncode == 0


_QEMUS = """
import json, sys
from tests.reliability.invariants import qemu_by_instance
found = qemu_by_instance(sys.argv[1:])
print(json.dumps({n: [[p.pid, p.incoming] for p in ps] for n, ps in found.items()}))
"""


def qemus(rig: netns_rig.Rig, host: netns_rig.Host, state_dirs: Sequence[str]) -> dict[str, list[int]]:
    """Live QEMUs of `host` (PIDs of its own namespace) whose pidfile is in `state_dirs`, by instance."""
    found = json.loads(python_in(rig, host, _QEMUS, *state_dirs))
    return {n: [int(pid) for pid, _ in ps] for n, ps in found.items()}


def assert_single_qemu(rig: netns_rig.Rig, hosts: Iterable[netns_rig.Host],
                       state_dirs: Sequence[str]) -> dict[str, str]:
    """Invariant 1 across hosts: at most one QEMU per instance on all of them. Instance -> its host."""
    where: dict[str, list[str]] = {}
    for host in hosts:
        for name, pids in qemus(rig, host, state_dirs).items():
            where.setdefault(name, []).extend(f"{host.name}:{pid}" for pid in pids)
    twice = {n: w for n, w in where.items() if len(w) > 1}
    assert not twice, f"instances with more than one QEMU across hosts: {twice}"
    return {n: w[0].split(":")[0] for n, w in where.items()}


_LEAKS = """
import sys
from tests.reliability.invariants import assert_no_leaks
try:
    assert_no_leaks(sys.argv[1:])
except AssertionError as err:
    print(err)
"""


def assert_no_leaks(rig: netns_rig.Rig, hosts: Iterable[netns_rig.Host], state_dirs: Sequence[str]) -> None:
    """Invariant 5 on every host, judged inside it: no intents, temp files, stale sockets or pidfiles,
    incoming targets left or node locks held."""
    problems = {h.name: python_in(rig, h, _LEAKS, *state_dirs).strip() for h in hosts}
    problems = {h: p for h, p in problems.items() if p}
    assert not problems, f"leftovers on the hosts: {problems}"


class HostLog:
    """A file on a host followed as it grows (`tail -F` inside the host): lines, waited for with a
    deadline, woken by the pipe (no polling)."""

    def __init__(self, rig: netns_rig.Rig, host: netns_rig.Host, path: str) -> None:
        self.host, self.path = host, path
        self._proc = popen_in(rig, host, "tail", "-n", "+1", "-F", "--", path)
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        self.lines: list[str] = []
        self._partial = b""
        self._seen = 0

    def wait_for(self, needle: Needle, timeout: float) -> str:
        """The first line not yet returned that matches `needle`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while True:
                while self._seen < len(self.lines):
                    line = self.lines[self._seen]
                    self._seen += 1
                    if needle.search(line) if isinstance(needle, re.Pattern) else needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    tail = "\n".join(f"  | {ln}" for ln in self.lines[-10:])
                    what = needle.pattern if isinstance(needle, re.Pattern) else needle
                    raise AssertionError(f"{self.host.name}:{self.path}: no line matching {what!r} "
                                         f"within {timeout:g}s; last lines:\n{tail}")
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    raise AssertionError(f"{self.host.name}:{self.path}: tail ended")
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self.lines += [c.decode(errors="replace").rstrip("\r") for c in complete]

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def __enter__(self) -> HostLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CANARY = r"""
import os, signal, sys
def note(signum, frame):
    print(signal.Signals(signum).name, flush=True)
for s in signal.valid_signals():
    if s not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(s, note)
        except (OSError, ValueError):
            pass
print(os.getpid(), flush=True)
while True:
    signal.pause()
"""


class HostCanary:
    """A decoy inside a host's PID namespace that reports every catchable signal it gets (see
    tests/reliability/canary.py): nothing of ours may ever signal it. `pid` is its PID on the host."""

    def __init__(self, rig: netns_rig.Rig, host: netns_rig.Host) -> None:
        self.rig, self.host = rig, host
        # nsenter forks into the host's PID namespace and waits: the decoy is its only child.
        self._proc = subprocess.Popen(rig.exec_argv(host, sys.executable, "-c", _CANARY),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        self._out = self._proc.stdout
        self._fd = self._out.fileno()
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while b"\n" not in data:
                assert sel.select(EXEC_TIMEOUT), f"the canary on {host.name} did not start"
                chunk = os.read(self._fd, 4096)
                assert chunk, f"the canary on {host.name} exited"
                data += chunk
        line, self._rest = data.split(b"\n", 1)
        self.pid = int(line)

    def check(self) -> None:
        """Alive, and no signal seen."""
        assert self._proc.poll() is None, f"the canary on {self.host.name} died"
        seen = self._rest
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while sel.select(0):
                chunk = os.read(self._fd, 4096)
                if not chunk:
                    break
                seen += chunk
        assert seen == b"", f"a process we did not start on {self.host.name} got signals: {seen!r}"
        state = run_in(self.rig, self.host, "cat", f"/proc/{self.pid}/stat").stdout.split()[2]
        assert state not in ("T", "t", "Z"), f"the canary on {self.host.name} is {state}"

    def stop(self) -> None:
        """Kill the decoy (nsenter's child, ours) and reap nsenter."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            for child in Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(child), signal.SIGKILL)
        self._proc.wait(EXEC_TIMEOUT)
        self._out.close()
