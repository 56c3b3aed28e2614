"""The per-instance UEFI variable store (firmware uefi): made once from OVMF's template, then kept.

The instance's NVRAM file is written at its first start, atomically and 0600, from the template of the
OVMF build it boots (reconciler.firmware); later starts find it there and leave it alone, so what the
guest or the firmware stored (boot entries, settings) survives restarts.
"""

from __future__ import annotations

import os

from reconciler import statedir
from reconciler.errors import LaunchError


def ensure(instance: str, path: str, template: str) -> None:
    """Create `path` from `template` unless it exists (LaunchError naming the template otherwise)."""
    if os.path.lexists(path):
        return
    try:
        with open(template, "rb") as f:
            data = f.read()
    except OSError as err:
        detail = f"the UEFI variable template {template} cannot be read: {err.strerror or err} (package ovmf)"
        raise LaunchError(instance, detail) from None
    statedir.atomic_write(path, data)
