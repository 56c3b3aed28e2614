"""What a host offers, as `node-info` shows it: memory, CPUs, load, the QEMU binary and KVM.

Its own module so the same facts come from this machine (LocalNode) and from a remote host (its agent
calls the same function there): the numbers are always the host's own, never this machine's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import psutil

from reconciler import firmware, launch
from reconciler.errors import LaunchError
from reconciler.values import Value

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class HostFacts(Value):
    """What a host has: memory, CPUs, load and its QEMU."""

    memory_total_mib: int
    memory_available_mib: int
    cpus: int
    load_average: tuple[float, float, float]
    qemu_path: str | None
    qemu_version: str | None
    kvm_usable: bool
    kvm_detail: str
    uefi: bool = False  # OVMF's code and variable template are there (firmware: uefi)
    secure_boot: bool = False  # and its secure-boot build (secureBoot: true)


def gather(qemu_binary: str, state_dir: str | None = None) -> HostFacts:
    """This machine's facts, for a node whose QEMU is `qemu_binary`."""
    mem = psutil.virtual_memory()
    qemu_path = shutil.which(qemu_binary)
    try:
        version = launch.qemu_version(qemu_binary, state_dir) if qemu_path else None
    except LaunchError:
        version = None
    kvm_ok, kvm_detail = kvm_usable()
    one, five, fifteen = os.getloadavg()
    uefi, secure = (all(os.path.isfile(p) for p in (build.code, build.vars_template))
                    for build in (firmware.PLAIN, firmware.SECURE))
    return HostFacts(
        memory_total_mib=mem.total // MIB, memory_available_mib=mem.available // MIB,
        cpus=psutil.cpu_count() or 1, load_average=(round(one, 2), round(five, 2), round(fifteen, 2)),
        qemu_path=qemu_path, qemu_version=version, kvm_usable=kvm_ok, kvm_detail=kvm_detail,
        uefi=uefi, secure_boot=secure,
    )


def kvm_usable(path: str = "/dev/kvm") -> tuple[bool, str]:
    """Whether `path` opens read-write: the same test QEMU makes."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"{path}: {err.strerror}"
    os.close(fd)
    return True, f"{path} opens read-write"
