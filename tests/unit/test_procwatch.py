"""Watching a process for its exit (reconciler.procwatch), as the daemon does locally and the agent does
on its host (the `process_watch` request); and the agent ending such waits when its controller goes away.
Real processes (`sleep`), real pidfds."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import psutil

from reconciler.procwatch import Ended, ExitSeen, watch_exit
from reconciler.remote import agent
from reconciler.remote import protocol as p
from reconciler.remote.hostops import HostOps


def sleeper() -> tuple[subprocess.Popen[bytes], float]:
    proc = subprocess.Popen(["sleep", "60"])
    return proc, psutil.Process(proc.pid).create_time()


def test_an_exit_is_seen_with_the_pidfile_evidence(tmp_path: Path) -> None:
    pidfile = tmp_path / "qemu.pid"
    for left in (True, False):
        proc, started = sleeper()
        pidfile.write_text(str(proc.pid))
        if not left:
            pidfile.unlink()  # what QEMU does on a clean exit

        async def main(proc: subprocess.Popen[bytes] = proc, started: float = started) -> ExitSeen:
            watching = asyncio.create_task(watch_exit(proc.pid, started, str(pidfile), 30.0))
            await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            return await watching

        t0 = time.monotonic()
        assert asyncio.run(main()) == ExitSeen(Ended.EXITED, left)
        assert time.monotonic() - t0 < 5.0
        proc.wait()


def test_a_running_process_a_reused_pid_and_a_gone_one(tmp_path: Path) -> None:
    proc, started = sleeper()
    try:
        assert asyncio.run(watch_exit(proc.pid, started, None, 0.05)) == ExitSeen(Ended.RUNNING)
        assert asyncio.run(watch_exit(proc.pid, started - 10.0, None, 5.0)) == ExitSeen(Ended.GONE)
    finally:
        proc.kill()
        proc.wait()
    assert asyncio.run(watch_exit(proc.pid, started, None, 5.0)) == ExitSeen(Ended.GONE)
    pidfile = tmp_path / "qemu.pid"
    pidfile.write_text(f"{proc.pid}\n")  # a kill leaves it behind: the evidence of a crash
    assert asyncio.run(watch_exit(proc.pid, started, str(pidfile), 5.0)) == ExitSeen(Ended.GONE, True)
    pidfile.unlink()  # a clean exit removes it
    assert asyncio.run(watch_exit(proc.pid, started, str(pidfile), 5.0)) == ExitSeen(Ended.GONE, False)


def test_the_agent_answers_a_watch_when_the_process_exits_and_drops_it_when_the_controller_leaves() -> None:
    first, first_started = sleeper()
    second, second_started = sleeper()
    out: list[p.Frame] = []
    answered = asyncio.Event()

    def write(data: bytes) -> None:
        out.append(p.decode(data))
        answered.set()

    async def main() -> float:
        reader = asyncio.StreamReader()
        ops = HostOps()
        serving = asyncio.create_task(agent.serve(reader, write, {**agent.HANDLERS, **ops.handlers()}))
        for ident, proc, started in ((1, first, first_started), (2, second, second_started)):
            params = {"pid": proc.pid, "started_at": started, "pidfile": None, "timeout": 60}
            reader.feed_data(p.encode(p.Request(ident, "process_watch", params)))
        await asyncio.sleep(0.2)
        answered.clear()
        first.kill()  # answered the moment it exits
        async with asyncio.timeout(5):
            await answered.wait()
        reader.feed_eof()  # the SSH connection went away: the other watch ends with it
        t0 = time.monotonic()
        async with asyncio.timeout(10):
            await serving
        await ops.close()
        return time.monotonic() - t0

    try:
        assert asyncio.run(main()) < 2.0  # not the watch's 60 s
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
    assert out[1:] == [p.Response(1, result={"ended": "exited", "pidfile_left": None})], out
