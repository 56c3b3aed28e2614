"""A link keeper: one detached process per SSH target that holds the connection between CLI runs.

Why: OpenSSH's ControlPersist, for our own link. A CLI run (reconciler.remote.keeperclient) that finds
this keeper's socket gets an agent of its own at once -- one already started on the host and
version-checked -- instead of importing asyncssh, shaking hands and waiting for the host to start an
interpreter. Each run still has its own agent process, so a lock the agent holds is let go when that run's
channel closes, exactly as with a connection of its own. After handing one out the keeper starts the next
spare once that run has ended (so the start never competes with the run it serves), or at once when a
run arrives with no spare ready.

The keeper relays bytes; the run's heartbeat travels to its agent as before, so a link that stops
answering fails the run's calls within HEARTBEAT_DEADLINE. The keeper pings its spare itself (it would
otherwise end after SILENCE), and once more before handing it out: a spare that does not answer within
the target's connectTimeout means the connection went quiet: the keeper ends, and the run connects
directly, whose own attempt says whether the host answers (after an outage, this connection may still be
backing off while a fresh one gets through). So does a channel that does not open within it (a run that
finds the spare still starting gives it connectTimeout, then starts an agent of its own).
When the connection is lost, every relayed channel is closed (the runs' calls fail: nothing is guessed)
and the keeper ends. It also ends after `persist` seconds with no run, on `{"op": "exit"}` (`reconciler
disconnect`) and on SIGTERM.

The socket is in a 0700 directory of ours, and every client's uid (SO_PEERCRED) must be ours.
Requests, one JSON line each: `{"op": "agent"}` (answered by the agent's hello line, then relayed),
`{"op": "forward", "path": P}` (a local socket path reaching P on the host, made once and kept),
`{"op": "info"}`, `{"op": "exit"}`; answers are `{"ok": {...}}` or `{"error": "..."}`.

Usage (by keeperclient.spawn): python -m reconciler.remote.keeper BASE FD, the SshTarget as JSON on
stdin, FD a descriptor of the start lock (BASE.starting, flocked by the spawner) that we close once we
listen or have failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable

from reconciler.errors import RemoteAgentError, RemoteHostError
from reconciler.remote import protocol as p
from reconciler.remote import ssh
from reconciler.remote.keeperclient import KeeperPaths, peer_ids, private_dir
from reconciler.remote.link import SshTarget
from reconciler.remote.sshlib import asyncssh

SPARE_HELLO_TIMEOUT = 60.0  # a spare started in the background keeps no run waiting (a loaded host)


class Agent:
    """One `reconciler agent` on the connection: a spare (pinged by us) until handed to one run."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes], hello: bytes,
                 on_lost: Callable[[str], None], on_end: Callable[[Agent], None]) -> None:
        self.proc = proc
        self.hello = hello
        self._client: asyncio.StreamWriter | None = None
        self._handed = False
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(-1, -1)  # ours are negative: the run's own start at 1
        self._on_lost = on_lost
        self._on_end = on_end
        self.ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._keepalive = asyncio.create_task(self._keep())

    async def _read(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            while line := await self.proc.stdout.readline():
                if self._handed:
                    if self._client is not None and not self._client.is_closing():
                        self._client.write(line)
                        with contextlib.suppress(OSError):
                            await self._client.drain()
                    continue
                with contextlib.suppress(p.ProtocolError):
                    frame = p.decode(line)
                    if isinstance(frame, p.Response) and frame.id in self._pings:
                        self._pings.pop(frame.id).set_result(None)
        self.ended.set()
        self._on_end(self)
        if self._client is not None:
            self._client.close()  # the run's link sees the end: its calls fail

    async def ping(self, timeout: float) -> bool:
        ident = next(self._ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ident] = future
        try:
            self.proc.stdin.write(p.encode(p.Request(ident, "ping", {})))
            async with asyncio.timeout(timeout):
                await future
            return True
        except (TimeoutError, OSError, asyncssh.Error):
            return False
        finally:
            self._pings.pop(ident, None)

    async def _keep(self) -> None:
        """The spare's heartbeat, until it is handed out; a spare that stops answering: the link is lost."""
        while not self._handed:
            await asyncio.sleep(p.HEARTBEAT)  # a timer between pings, not a poll
            if not self._handed and not await self.ping(p.HEARTBEAT_DEADLINE):
                self._on_lost(f"no answer to a heartbeat within {p.HEARTBEAT_DEADLINE:g}s")
                return

    def hand_to(self, client: asyncio.StreamWriter) -> None:
        self._handed = True
        self._keepalive.cancel()
        self._client = client
        client.write(self.hello)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    def end(self) -> None:
        """The run is done: the agent finishes what it was asked and ends (its answers go nowhere)."""
        self._client = None
        self._keepalive.cancel()
        with contextlib.suppress(OSError, asyncssh.Error):
            self.proc.stdin.write_eof()


class Keeper:
    def __init__(self, target: SshTarget, paths: KeeperPaths) -> None:
        self.target = target
        self.paths = paths
        self.conn: asyncssh.SSHClientConnection | None = None
        self._spare: asyncio.Task[Agent] | None = None
        self._agents: set[Agent] = set()
        self._forwards: dict[str, asyncio.Future[str]] = {}  # remote socket path -> its local forward
        self._listeners: list[asyncssh.SSHListener] = []
        self._socket_names = itertools.count()
        self._clients = 0
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self.why = ""
        self.agent_error: str | None = None  # the last run's agent could not be started
        self.runs = 0
        self.since = time.time()

    def stop(self, why: str) -> None:
        if not self._stop.is_set():
            self.why = why
            self._stop.set()

    async def _start_agent(self, hello_timeout: float = SPARE_HELLO_TIMEOUT) -> Agent:
        assert self.conn is not None
        async with asyncio.timeout(self.target.connect_timeout):  # a channel: one round trip
            proc = await self.conn.create_process(ssh._agent_command(self.target.agent_command),
                                                  encoding=None)
        try:
            hello = await ssh._hello(self.target, proc, hello_timeout)
        except BaseException:
            proc.close()
            raise
        line = p.encode(hello)
        agent = Agent(proc, line, self.stop, self._agents.discard)
        self._agents.add(agent)
        return agent

    def _refill(self) -> None:
        if self._spare is None and not self._stop.is_set():
            self._spare = asyncio.create_task(self._start_agent())

    async def _take(self) -> Agent | None:
        """The spare (or one started now), checked with a ping. None: see `agent_error`, `why`."""
        task, self._spare = self._spare, None
        if task is not None and task.done() and (task.cancelled() or task.exception() is not None):
            task = None  # a background start that failed (a host too loaded to start it in time)
        if task is not None and not task.done():
            # A background start waits for its hello up to SPARE_HELLO_TIMEOUT, on a link that may have
            # gone quiet since its channel opened: after connectTimeout, this run starts one with a
            # run's deadlines, whose channel's opening says whether the host still answers.
            done, _ = await asyncio.wait([task], timeout=self.target.connect_timeout)
            if not done:
                self._spare, task = task, None
        if task is None:
            task = asyncio.create_task(self._start_agent(ssh.HELLO_TIMEOUT))
        done, _ = await asyncio.wait([task], timeout=self.target.connect_timeout + ssh.HELLO_TIMEOUT)
        if not done:  # still starting: this run is told as a direct one would be
            if self._spare is None:
                self._spare = task  # it stays the spare
            else:
                task.cancel()
            command = ssh._agent_command(self.target.agent_command)
            self.agent_error = f"`{command}` said nothing within {ssh.HELLO_TIMEOUT:g}s"
            return None
        try:
            agent = task.result()
        except RemoteAgentError as err:  # the connection is fine; the agent is not (missing, too slow)
            self.agent_error = err.detail
            return None
        except TimeoutError:  # the channel's opening went unanswered: the connection went quiet
            self.stop(f"opening a channel: no answer within {self.target.connect_timeout:g}s")
            return None
        except (RemoteHostError, OSError, asyncssh.Error) as err:
            self.stop(f"cannot start an agent: {err or 'no answer'}")
            return None
        if agent.ended.is_set():
            self.stop("the spare agent ended")
            return None
        if not await agent.ping(self.target.connect_timeout):
            self.stop(f"the spare agent did not answer a ping within {self.target.connect_timeout:g}s")
            return None
        return agent

    # --- clients ----------------------------------------------------------------------------------

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _pid, uid = peer_ids(writer.get_extra_info("socket"))
            if uid != os.geteuid():
                writer.write(_answer(error=f"refused: uid {uid} is not {os.geteuid()}"))
                return
            line = await reader.readline()
            try:
                op = json.loads(line)
            except ValueError:
                op = {}
            match op.get("op") if isinstance(op, dict) else None:
                case "agent":
                    await self._relay(reader, writer)
                case "forward":
                    writer.write(await self._forward(op.get("path")))
                case "info":
                    writer.write(_answer(pid=os.getpid(), since=self.since, runs=self.runs,
                                         clients=self._clients, target=self.target.where))
                case "exit":
                    writer.write(_answer(pid=os.getpid()))
                    self.stop("asked to exit")
                case _:
                    writer.write(_answer(error=f"unknown request {line[:60]!r}"))
        except (OSError, asyncssh.Error):
            pass
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.agent_error = None
        agent = await self._take()
        if agent is None:
            if self.agent_error is not None:  # as the run's own start of the agent would have said
                writer.write(_answer(error=self.agent_error, agent=self.agent_error))
                self._refill()
            else:  # ending (its connection quiet, lost, ...): the run connects directly, which decides
                writer.write(_answer(error=f"the link keeper is ending: {self.why}"))
            return
        self.runs += 1
        self._clients += 1
        self._changed.set()
        try:
            agent.hand_to(writer)
            while chunk := await reader.read(256 * 1024):
                agent.write(chunk)
                await agent.proc.stdin.drain()
        finally:
            agent.end()
            self._clients -= 1
            self._changed.set()
            self._refill()

    async def _forward(self, remote: object) -> bytes:
        if not isinstance(remote, str) or not remote.startswith("/"):
            return _answer(error="forward: path: expected an absolute path")
        made = self._forwards.get(remote)
        if made is None:  # one forward per remote socket, even for clients asking at the same moment
            made = self._forwards[remote] = asyncio.ensure_future(self._make_forward(remote))
        try:
            local = await asyncio.shield(made)
        except (OSError, asyncssh.Error) as err:
            if self._forwards.get(remote) is made:
                del self._forwards[remote]  # made afresh by the next request
            return _answer(error=str(err) or type(err).__name__)
        return _answer(local=local)

    async def _make_forward(self, remote: str) -> str:
        assert self.conn is not None
        # The name is taken before the await: two forwards made at once never bind one path (one
        # instance's QMP client would reach another instance's QEMU).
        local = os.path.join(private_dir(self.paths.forwards), f"{next(self._socket_names)}.sock")
        listener = await self.conn.forward_local_path(local, remote)
        self._listeners.append(listener)
        return local

    # --- life -------------------------------------------------------------------------------------

    async def run(self, persist: float, starting: int) -> int:
        """Connect, start the first spare, listen; then `starting` (the start lock) is let go."""
        try:
            self.conn = await ssh._connect(self.target)
            self._spare = asyncio.create_task(self._start_agent())
            await self._spare  # a keeper that cannot start an agent serves nobody
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.socket)  # a dead keeper's (we hold the lock)
            server = await asyncio.start_unix_server(self.client, path=self.paths.socket,
                                                     limit=p.MAX_FRAME)
            os.chmod(self.paths.socket, 0o600)
        finally:
            os.close(starting)  # whoever waits for this start (keeperclient.wait_started) goes on
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        lost = asyncio.create_task(self.conn.wait_closed())
        lost.add_done_callback(lambda _: self.stop("the connection was lost"))
        idle = asyncio.create_task(self._idle(persist))
        try:
            await self._stop.wait()
        finally:
            idle.cancel()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.socket)
            await self._close()
        return 0

    async def _idle(self, persist: float) -> None:
        """End after `persist` seconds with no run (each run's arrival or end restarts the clock)."""
        while True:
            self._changed.clear()
            if self._clients == 0:
                try:
                    async with asyncio.timeout(persist):
                        await self._changed.wait()
                except TimeoutError:
                    self.stop(f"idle for {persist:g}s")
                    return
            else:
                await self._changed.wait()

    async def _close(self) -> None:
        for listener in self._listeners:
            listener.close()
        if self._spare is not None:
            self._spare.cancel()
        for agent in self._agents:
            agent.end()
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
                async with asyncio.timeout(5):
                    await self.conn.wait_closed()
        with contextlib.suppress(OSError):
            for name in os.listdir(self.paths.forwards):
                os.unlink(os.path.join(self.paths.forwards, name))
            os.rmdir(self.paths.forwards)


def _answer(error: str | None = None, **fields: object) -> bytes:
    obj = {"error": error, **fields} if error is not None else {"ok": fields}
    return json.dumps(obj).encode() + b"\n"


def main(argv: list[str]) -> int:
    paths = KeeperPaths(argv[1])
    starting = int(argv[2])  # the start lock, taken by the CLI that spawned us: held until we listen
    raw = json.loads(sys.stdin.buffer.read())
    raw["agent_command"] = tuple(raw["agent_command"])
    target = SshTarget(**raw)
    lock = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until we exit
    except OSError:
        return 0  # another keeper of this target is alive
    keeper = Keeper(target, paths)
    try:
        code = asyncio.run(keeper.run(target.persist, starting))
    except (RemoteHostError, OSError, asyncssh.Error, TimeoutError) as err:
        print(f"link keeper {target.where}: {err}", file=sys.stderr)
        return 1
    print(f"link keeper {target.where}: ended ({keeper.why}) after {keeper.runs} run(s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
