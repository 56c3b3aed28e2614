"""What an instance holds exclusively (planner.handoff.held), table-driven with exact labels."""

from __future__ import annotations

import pytest

from reconciler.argv import tap_ifname
from reconciler.model import Disk, Nic, NicMode, NodeSpec, Vnc
from reconciler.planner.handoff import held

from .factories import spec

NODE = NodeSpec("a", state_dir="/var/lib/reconciler/a")
TAP0 = tap_ifname(NODE, "vm", 0)


@pytest.mark.parametrize(("vm", "node", "expected"), [
    (spec("vm"), NODE, set()),
    (spec("vm", disks=(Disk("/srv/a.img", boot=True), Disk("/srv/x/../b.img", read_only=True))), NODE,
     {"disk /srv/a.img", "disk /srv/b.img"}),
    (spec("vm", vnc=Vnc(bind="0.0.0.0", display=7)), NODE, {"VNC display :7"}),
    (spec("vm", nics=(Nic("52:54:00:AB:CD:EF", mode=NicMode.USER),)), NODE,
     {"MAC address 52:54:00:ab:cd:ef"}),
    (spec("vm", nics=(Nic("52:54:00:00:00:01", bridge="br0"),)), NODE,
     {"MAC address 52:54:00:00:00:01", f"tap {TAP0}"}),
    (spec("vm", nics=(Nic("52:54:00:00:00:01", bridge="br0"),)), None, {"MAC address 52:54:00:00:00:01"}),
], ids=["nothing", "disks-normalized", "vnc", "mac-user-mode", "mac-and-tap", "unknown-node-no-tap"])
def test_held(vm: object, node: NodeSpec | None, expected: set[str]) -> None:
    assert held(vm, node) == frozenset(expected)  # type: ignore[arg-type]
