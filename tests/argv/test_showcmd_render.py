"""`reconciler showcmd`: the pure parts (selection, --incoming parsing, rendering)."""

from __future__ import annotations

import shlex

import pytest

from reconciler.argv import IncomingSpec, build_launch
from reconciler.commands.showcmd import InstanceUnscheduled, UnknownNode, parse_incoming, render, select
from reconciler.errors import InstanceNotFound, UsageError
from reconciler.model import DesiredState, Disk, InstanceSpec, Nic, NodeSpec

N1 = NodeSpec(name="n1", state_dir="/srv/n1")
N2 = NodeSpec(name="n2", state_dir="/srv/n2")
A = InstanceSpec(name="a", memory_mib=64, node="n1")
B = InstanceSpec(name="b", memory_mib=64)
C = InstanceSpec(name="c", memory_mib=64, node="gone")
DESIRED = DesiredState(instances={"a": A, "b": B, "c": C}, nodes={"n1": N1, "n2": N2})


def test_select() -> None:
    assert select(DESIRED, "a", None) == (A, N1)
    assert select(DESIRED, "a", "n2") == (A, N2)
    assert select(DESIRED, "b", "n2") == (B, N2)
    with pytest.raises(InstanceNotFound):
        select(DESIRED, "zz", None)
    with pytest.raises(InstanceUnscheduled, match="instance b is unscheduled"):
        select(DESIRED, "b", None)
    with pytest.raises(UnknownNode, match="node gone is not declared"):
        select(DESIRED, "c", None)


@pytest.mark.parametrize(("text", "want"), [
    (None, None), ("defer", IncomingSpec()), ("10.0.0.1:49152", IncomingSpec("10.0.0.1", 49152)),
    ("[::1]:5", IncomingSpec("::1", 5)),
])
def test_parse_incoming(text: str | None, want: IncomingSpec | None) -> None:
    assert parse_incoming(text) == want


@pytest.mark.parametrize("text", ["", "host", ":5", "h:x"])
def test_parse_incoming_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_incoming(text)


def test_render_pretty_exact() -> None:
    argv = ("qemu", "-name", "guest=a", "-nodefaults", "-blockdev", "filename=/d/a b,,c", "-S")
    assert render(argv) == (
        "qemu \\\n"
        "  -name guest=a \\\n"
        "  -nodefaults \\\n"
        "  -blockdev 'filename=/d/a b,,c' \\\n"
        "  -S"
    )
    assert render(argv, (("X", "a b"),)) == "X='a b' \\\n" + render(argv)
    assert render(argv, (("X", "1"),), pretty=False) == "X=1 qemu -name guest=a -nodefaults -blockdev " \
                                                       "'filename=/d/a b,,c' -S"


def test_render_round_trips_through_the_shell() -> None:
    spec = InstanceSpec(name="a", memory_mib=64, disks=(Disk(path="/d/it's a,b ü.img"),),
                        nics=(Nic(mac="52:54:00:00:00:01"),))
    launch = build_launch(spec, N1)
    words = shlex.split(render(launch.argv, launch.env).replace("\\\n", " "))
    assert words == [f"{k}={v}" for k, v in launch.env] + list(launch.argv)
