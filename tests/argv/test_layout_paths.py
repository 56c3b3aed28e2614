"""reconciler.layout: exact paths, name validation, sun_path limit."""

from __future__ import annotations

import pytest

from reconciler.layout import (
    SUN_PATH_MAX,
    InstancePaths,
    InvalidInstanceName,
    SocketPathTooLong,
    check_socket_path,
    check_sockets,
    instance_paths,
    node_lock,
    validate_name,
)
from reconciler.model import NodeSpec

NODE = NodeSpec(name="n1", state_dir="/var/lib/rc/n1")


def test_paths() -> None:
    d = "/var/lib/rc/n1/instances/web-1"
    assert instance_paths(NODE, "web-1") == InstancePaths(
        dir=d, pidfile=f"{d}/qemu.pid", qmp=f"{d}/qmp.sock", qmp_watch=f"{d}/qmp-watch.sock",
        serial=f"{d}/serial.sock", serial_log=f"{d}/serial.log", record=f"{d}/record.json",
        intent=f"{d}/intent.json")
    assert instance_paths(NODE, "web-1").nic_file("rc01234567n0") == f"{d}/nic-rc01234567n0.json"
    assert node_lock(NODE) == "/var/lib/rc/n1/node.lock"


def test_trailing_slash_in_state_dir() -> None:
    node = NodeSpec(name="n1", state_dir="/var/lib/rc/n1/")
    assert instance_paths(node, "a").pidfile == "/var/lib/rc/n1/instances/a/qemu.pid"


@pytest.mark.parametrize("name", ["a", "0", "web-1", "a" * 63, "1-2-3"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(("name", "needle"), [
    ("", "empty"), ("a" * 64, "64 characters"), ("..", "DNS label"), ("a/b", "DNS label"),
    ("-a", "DNS label"), ("a-", "DNS label"), ("A", "DNS label"), ("a.b", "DNS label"), ("a_b", "DNS label"),
    ("é", "DNS label"),
    ("a\n", "DNS label"),
])
def test_invalid_names(name: str, needle: str) -> None:
    with pytest.raises(InvalidInstanceName) as info:
        instance_paths(NODE, name)
    assert info.value.name == name
    assert needle in str(info.value)


def test_socket_path_limit_counts_utf8_bytes() -> None:
    ok = "/" + "x" * (SUN_PATH_MAX - 1)
    assert check_socket_path(ok) == ok
    for bad in (ok + "x", ok[:-1] + "é"):
        with pytest.raises(SocketPathTooLong) as info:
            check_socket_path(bad)
        assert info.value.path == bad
        assert info.value.length == 108
        assert "108 bytes" in str(info.value) and bad in str(info.value)


def test_check_sockets_names_the_first_long_socket() -> None:
    # qmp.sock fits, qmp-watch.sock (the longest name) does not
    state_dir = "/" + "s" * (SUN_PATH_MAX - len("/instances/a/qmp-watch.sock"))
    paths = instance_paths(NodeSpec(name="n", state_dir=state_dir), "a")
    assert len(paths.qmp_watch.encode()) == SUN_PATH_MAX + 1
    with pytest.raises(SocketPathTooLong) as info:
        check_sockets(paths)
    assert info.value.path == paths.qmp_watch
