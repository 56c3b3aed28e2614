"""UEFI firmware files (Debian's `ovmf` package) and the per-instance NVRAM variables. Pure: paths only.

`firmware: uefi` boots through OVMF: its code is mapped read-only (shared by every instance), and the
variable store is the instance's own copy, made from the package's template at the first start and kept
across restarts (it lives in the instance's state directory). `secureBoot: true` uses the secure-boot
build with Microsoft's keys enrolled, which needs SMM (`q35`).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import Firmware, InstanceSpec
from reconciler.values import Value

OVMF_DIR = "/usr/share/OVMF"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Ovmf(Value):
    """The UEFI firmware pair of a node: the code image and the variables template."""

    code: str  # mapped read-only
    vars_template: str  # copied once per instance into its NVRAM file


PLAIN = Ovmf(f"{OVMF_DIR}/OVMF_CODE_4M.fd", f"{OVMF_DIR}/OVMF_VARS_4M.fd")
SECURE = Ovmf(f"{OVMF_DIR}/OVMF_CODE_4M.secboot.fd", f"{OVMF_DIR}/OVMF_VARS_4M.ms.fd")


def ovmf_of(spec: InstanceSpec) -> Ovmf | None:
    """The OVMF build `spec` boots with; None for BIOS (SeaBIOS, QEMU's own)."""
    if spec.firmware is not Firmware.UEFI:
        return None
    return SECURE if spec.secure_boot else PLAIN
