"""Which InstanceSpec fields need a new QEMU process when they change, and which do not.

One table, one entry per field, so adding a field to the model without deciding its policy fails a
test instead of silently never (or always) restarting instances. The classes (docs/manifests.md shows
each field's): restart, live (changed in the running QEMU within limits fixed at its start, else a
restart: reconciler.hotplug), migrate-only (`node`), and record (read by the reconciler alone).
"""

from __future__ import annotations

import enum
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from reconciler.model import Disk, InstanceSpec


class FieldPolicy(enum.StrEnum):
    RESTART = "restart"  # baked into the QEMU command line: needs a new process
    MIGRATE = "migrate"  # where the process runs: a migration moves it
    IGNORE = "ignore"  # read by the reconciler itself; takes effect without touching QEMU
    LIVE = "live"  # changed in the running QEMU over QMP when within its boot limits; else RESTART


POLICY = MappingProxyType({
    "name": FieldPolicy.IGNORE,  # the identity; never differs between desired and recorded
    "memory_mib": FieldPolicy.LIVE,  # balloon / DIMM hotplug, up to the max_memory_mib QEMU started with
    "vcpus": FieldPolicy.LIVE,  # CPU hotplug, up to the max_vcpus QEMU started with
    "max_memory_mib": FieldPolicy.RESTART,
    "max_vcpus": FieldPolicy.RESTART,
    "node": FieldPolicy.MIGRATE,
    "labels": FieldPolicy.IGNORE,
    "run_strategy": FieldPolicy.IGNORE,  # decides what to do, is not itself a change to apply
    "protect": FieldPolicy.IGNORE,
    "update_policy": FieldPolicy.IGNORE,
    "disks": FieldPolicy.LIVE,  # added/removed (virtio, pc machine), cache reopened: reconciler.devplug
    "kernel": FieldPolicy.RESTART,
    "acpi": FieldPolicy.RESTART,
    "serial_console": FieldPolicy.RESTART,
    "vnc": FieldPolicy.LIVE,  # its password file only (change-vnc-password); on/off, bind, TLS: restart
    "nics": FieldPolicy.LIVE,  # added/removed on a pc machine: reconciler.devplug
    "machine": FieldPolicy.RESTART,
    "cpu_model": FieldPolicy.RESTART,
    "shutdown_timeout": FieldPolicy.IGNORE,
    "migration": FieldPolicy.IGNORE,
    "extra_args": FieldPolicy.RESTART,
    "guest_agent": FieldPolicy.RESTART,  # a device on the command line
    "firmware": FieldPolicy.RESTART,
    "secure_boot": FieldPolicy.RESTART,
    "cloud_init": FieldPolicy.RESTART,  # the seed is read at boot: a new process attaches the new one
})

# Fields the spec diff walks: `node` is decided by placement, not by comparing records.
DIFFED_FIELDS: tuple[str, ...] = tuple(
    name for name, policy in POLICY.items() if policy is not FieldPolicy.MIGRATE and name != "name"
)


def forces_restart(field_name: str) -> bool:
    return POLICY[field_name] is FieldPolicy.RESTART


def live_ok(field_name: str, running: InstanceSpec, desired: InstanceSpec,
            boot: InstanceSpec | None = None) -> bool:
    """Whether a LIVE field's change from `running` (what the QEMU runs with, its limits included; it was
    started as `boot`, None: as `running`) to `desired` can be made in that QEMU. Other fields: False."""
    from reconciler import devplug, hotplug  # here: only a changed spec is asked (their classes cost)

    launched = running if boot is None else boot
    if field_name == "memory_mib":
        return hotplug.live_memory_ok(running, desired.memory_mib)
    if field_name == "vcpus":
        return hotplug.live_vcpus_ok(running, launched.vcpus, desired.vcpus)
    if field_name == "disks":  # sizes that only grew stay the in-place resize below (grown_only)
        disks = devplug.disk_change(launched, running.disks, desired.disks)
        return disks is not None and not disks.empty
    if field_name == "nics":
        nics = devplug.nic_change(launched, running.nics, desired.nics)
        return nics is not None and not nics.empty
    if field_name == "vnc":
        return vnc_password_only(running, desired)
    return False


def vnc_password_only(running: InstanceSpec, desired: InstanceSpec) -> bool:
    """VNC stays on with a password, and only its password file changed: `change-vnc-password`. QEMU 7.2
    cannot add or remove a VNC display, nor its password requirement, in a running process."""
    o, n = running.vnc, desired.vnc
    return (o is not None and n is not None and o.password_file is not None and n.password_file is not None
            and o != n and replace(o, password_file=n.password_file) == n)


def change_class(field_name: str, running: InstanceSpec, desired: InstanceSpec,
                 boot: InstanceSpec | None = None) -> FieldPolicy:
    """The class of this field's change: a LIVE field outside the running QEMU's limits is RESTART."""
    policy = POLICY[field_name]
    if policy is FieldPolicy.LIVE and not live_ok(field_name, running, desired, boot):
        return FieldPolicy.RESTART
    return policy


def record_spec(recorded: InstanceSpec, desired: InstanceSpec, on_node: str, *,
                live: bool = False, boot: InstanceSpec | None = None) -> InstanceSpec:
    """What the applied record of a process started with `recorded` says once `desired` is applied
    without a new process: every field that needs no restart comes from `desired` (LIVE ones too when
    `live`, the process being changed, and within its limits; `boot`: what it was started as, when that
    differs), and so does the declared node when the instance is on it (or none is declared).
    Restart-forcing fields keep what the process runs with, so held-back changes stay visible."""
    taken: dict[str, Any] = {
        name: getattr(desired, name) for name, policy in POLICY.items()
        if name != "name" and (policy is FieldPolicy.IGNORE
                               or (live and policy is FieldPolicy.LIVE
                                   and live_ok(name, recorded, desired, boot)))
    }
    if desired.node is None or desired.node == on_node:
        taken["node"] = desired.node
    if grown_only(recorded.disks, desired.disks):  # resized live (block_resize), no new process
        taken["disks"] = desired.disks
    return replace(recorded, **taken)


def grown_disks(old: tuple[Disk, ...], new: tuple[Disk, ...]) -> tuple[tuple[int, Disk], ...]:
    """(index, new disk) of the provisioned disks whose `size` grew, the entry otherwise the same."""
    if len(old) != len(new):
        return ()
    return tuple((i, n) for i, (o, n) in enumerate(zip(old, new, strict=True))
                 if n.provisioned and o.size is not None and n.size is not None and n.size > o.size
                 and replace(o, size=n.size, delete_policy=n.delete_policy) == n)


def grown_only(old: tuple[Disk, ...], new: tuple[Disk, ...]) -> bool:
    """The disks differ, and only in sizes that grew (a live resize) or in their deletePolicy (read by
    the reconciler alone): an in-place update, not a restart (issue 14)."""
    if len(old) != len(new) or old == new:
        return False
    for o, n in zip(old, new, strict=True):
        grew = n.provisioned and o.size is not None and n.size is not None and n.size > o.size
        if replace(o, size=n.size if grew else o.size, delete_policy=n.delete_policy) != n:
            return False
    return True
