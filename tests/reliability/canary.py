"""Decoy processes that must never be signalled: proof that we only touch processes we started.

`Canaries.start(dir)` starts two decoys as children of the test: a plain `sleep`, and a tiny Python
process that records every catchable signal it receives to a file. `plant_pidfile(path)` writes the
Python decoy's PID into a pidfile (a stale pidfile pointing at a live, unrelated process: the classic
way to make a careless tool kill a stranger). `check()` asserts both are alive, not stopped, and that
the recorder saw no signal. `stop()` kills them (our own children: safe).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

READY_TIMEOUT = 10.0

# Handles every catchable signal by appending its name to the log (flushed at once), then keeps waiting.
_RECORDER = r"""
import signal, sys
log = open(sys.argv[1], "a", buffering=1)
def note(signum, frame):
    log.write(signal.Signals(signum).name + "\n")
    print(signal.Signals(signum).name, flush=True)
for s in signal.valid_signals():
    if s not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(s, note)
        except (OSError, ValueError):
            pass
print("ready", flush=True)
while True:
    signal.pause()
"""


@dataclass
class Canaries:
    log: Path
    recorder: subprocess.Popen[bytes]
    sleeper: subprocess.Popen[bytes]
    pidfiles: list[Path] = field(default_factory=list)

    @classmethod
    def start(cls, directory: Path) -> Canaries:
        log = directory / "canary-signals.log"
        log.touch()
        recorder = subprocess.Popen([sys.executable, "-c", _RECORDER, str(log)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, start_new_session=True)
        sleeper = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL, start_new_session=True)
        canaries = cls(log, recorder, sleeper)
        assert recorder.stdout is not None
        os.set_blocking(recorder.stdout.fileno(), True)
        line = _readline(recorder.stdout, READY_TIMEOUT)  # handlers installed: the event, not a sleep
        assert line == b"ready\n", f"canary did not start: {line!r}"
        return canaries

    @property
    def pids(self) -> tuple[int, int]:
        return self.recorder.pid, self.sleeper.pid

    def plant_pidfile(self, path: Path) -> int:
        """Write the recorder's PID into `path` (creating its directory); returns the PID."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.recorder.pid}\n")
        self.pidfiles.append(path)
        return self.recorder.pid

    def wait_signal(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the recorder reports a signal (for tests of the canary itself)."""
        assert self.recorder.stdout is not None
        return _readline(self.recorder.stdout, timeout).decode().strip()

    def signals_seen(self) -> list[str]:
        return self.log.read_text().split()

    def check(self) -> None:
        """Both decoys alive and running, and no signal received."""
        for proc in (self.recorder, self.sleeper):
            assert proc.poll() is None, f"canary pid {proc.pid} ({proc.args!r}) died: {proc.returncode}"
            status = psutil.Process(proc.pid).status()
            assert status not in (psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED), (proc.pid, status)
        assert self.signals_seen() == [], f"a process we did not start got signals: {self.signals_seen()}"

    def stop(self) -> None:
        for proc in (self.recorder, self.sleeper):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)  # our own child
            proc.wait(READY_TIMEOUT)
        if self.recorder.stdout is not None:
            self.recorder.stdout.close()


def _readline(stream: object, timeout: float) -> bytes:
    import select

    fd = stream.fileno()  # type: ignore[attr-defined]
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, "canary gave no ready line in time"
    return stream.readline()  # type: ignore[attr-defined, no-any-return]
