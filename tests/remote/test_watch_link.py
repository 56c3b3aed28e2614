"""What the watch daemon needs of a host link, on the rig: a process's exit on the host answered the
moment it happens (`RemoteNode.watch_exit`: a pidfd on the host), a call in flight failing at once when the
link is closed (not at its deadline), and `wait_lost` telling of a connection that went away."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from reconciler import model
from reconciler.errors import RemoteCallError
from reconciler.procwatch import Ended, ExitSeen
from reconciler.remote.node import RemoteNode
from reconciler.remote.ssh import open_link
from tests.remote import netns_rig
from tests.remote.test_link import target

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(120)]


def background_sleep(rig: netns_rig.Rig, host: netns_rig.Host) -> int:
    """A `sleep` inside `host`; its PID there."""
    out = subprocess.run(rig.exec_argv(host, "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"),
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int(out)


def kill_in(rig: netns_rig.Rig, host: netns_rig.Host, pid: int) -> None:
    subprocess.run(rig.exec_argv(host, "kill", "-KILL", str(pid)), check=False, capture_output=True,
                   timeout=30)


def node_on(host: netns_rig.Host) -> model.NodeSpec:
    return model.NodeSpec(name=host.name, state_dir=f"{netns_rig.STATE_ROOT}/wl", address=host.address,
                          ssh=model.SshSpec(host.address))


def test_an_exit_on_the_host_is_answered_at_once_and_a_closed_link_fails_the_watch(
        rig: netns_rig.Rig) -> None:
    h1 = rig.hosts[0]
    first, second = background_sleep(rig, h1), background_sleep(rig, h1)

    async def go() -> tuple[ExitSeen, float, float]:
        link = await open_link(target(rig, h1))
        node = RemoteNode(node_on(h1), link)
        try:
            watching = asyncio.create_task(node.watch_exit(first, None, None, 60.0))
            await asyncio.sleep(0.3)
            assert not watching.done()
            t0 = time.monotonic()
            await asyncio.to_thread(kill_in, rig, h1, first)
            async with asyncio.timeout(10):
                seen = await watching
            answered = time.monotonic() - t0
            other = asyncio.create_task(node.watch_exit(second, None, None, 60.0))
            await asyncio.sleep(0.3)
            t1 = time.monotonic()
        finally:
            await link.close()
        with pytest.raises(RemoteCallError, match=r"the link was closed|the connection was lost"):
            async with asyncio.timeout(5):
                await other
        assert await link.wait_lost() in ("the link was closed", "the connection was lost")
        return seen, answered, time.monotonic() - t1

    try:
        seen, answered, failed = asyncio.run(go())
    finally:
        kill_in(rig, h1, second)
    assert seen == ExitSeen(Ended.EXITED, None)
    assert answered < 2.0 and failed < 2.0, (answered, failed)


def test_wait_lost_tells_of_a_connection_that_went_away(rig: netns_rig.Rig) -> None:
    h3 = rig.hosts[2]

    async def go() -> str:
        link = await open_link(target(rig, h3))
        try:
            lost = asyncio.create_task(link.wait_lost())
            await asyncio.sleep(0.2)
            assert not lost.done()
            # The connection's server side (the per-connection sshd), not the listener.
            await asyncio.to_thread(subprocess.run, rig.exec_argv(h3, "pkill", "-KILL", "-f", "sshd: root"),
                                    capture_output=True, check=False, timeout=30)
            async with asyncio.timeout(10):
                return await lost
        finally:
            await link.close()

    assert "the connection was lost" in asyncio.run(go())
