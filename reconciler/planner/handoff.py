"""Host resources an instance holds exclusively, so the planner can order hand-offs between instances.

QEMU takes a write lock on each disk image, binds its VNC display's port, and opens its tap devices; two
guests with one MAC address on a bridge disturb each other. When a plan stops (or restarts away from) an
instance that holds such a resource and starts another instance that needs it, for example a rename from
`r1` to `r2` with the same disk and pruning on, the start must wait for the stop. Resources are
compared across nodes (nodes may share a machine, and disks may be shared storage): a needless
ordering only costs parallelism, a missing one fails the start. Pure.
"""

from __future__ import annotations

import posixpath

from reconciler.model import InstanceSpec, NicMode, NodeSpec


def held(spec: InstanceSpec, node: NodeSpec | None) -> frozenset[str]:
    """What a QEMU of `spec` on `node` holds, as labels that say what they are ("disk /d/a.img")."""
    out = {f"disk {posixpath.normpath(d.path)}" for d in spec.disks}
    if spec.vnc is not None:  # one display per port, whatever the bind address (0.0.0.0 overlaps all)
        out.add(f"VNC display :{spec.vnc.display}")
    for i, nic in enumerate(spec.nics):
        out.add(f"MAC address {nic.mac.lower()}")
        if nic.mode is NicMode.BRIDGE and node is not None:
            from reconciler.argv import tap_ifname  # the argv builder's imports only for a bridged NIC

            out.add(f"tap {tap_ifname(node, spec.name, i)}")
    return frozenset(out)
