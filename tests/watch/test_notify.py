"""sd_notify over a real unix datagram socket (as systemd provides it), and the no-op without one."""

from __future__ import annotations

import os
import socket
import tempfile

from reconciler.watch.notify import Notifier


def test_ready_and_status_datagrams() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        path = os.path.join(d, "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            server.settimeout(5.0)
            n = Notifier({"NOTIFY_SOCKET": path})
            assert n.enabled
            assert n.ready("reconciled 3 instances")
            assert server.recv(4096).decode().splitlines() == [
                "READY=1", "STATUS=reconciled 3 instances", f"MAINPID={os.getpid()}"]
            assert n.status("line one\nline two")
            assert server.recv(4096).decode() == "STATUS=line one line two"
            assert n.stopping("bye")
            assert server.recv(4096).decode() == "STOPPING=1\nSTATUS=bye"


def test_abstract_socket() -> None:
    name = f"reconciler-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5.0)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("x")
        assert server.recv(100) == b"STATUS=x"


def test_without_notify_socket_nothing_happens() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x")


def test_unreachable_socket_is_not_an_error() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"}).status("x")
