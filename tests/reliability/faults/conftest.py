"""The fixtures every fault test shares: the rig (with its witnesses and the bystander running) and the
fault-injecting QEMU wrapper on node-b."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest

from .kit import Rig, make_rig
from .wrapper import Wrapper


@pytest.fixture
def rig(tmp_path: Path, guest: Guest) -> Iterator[Rig]:
    with make_rig(tmp_path, str(guest.kernel), str(guest.initrd)) as r:
        r.start_bystander()
        yield r


@pytest.fixture
def wrapper(rig: Rig) -> Wrapper:
    """node-b launches QEMU through the wrapper (mode "pass" until a test sets a fault)."""
    w = Wrapper(rig.tmp / "bin")
    rig.set_node("node-b", qemuBinary=str(w.path))
    return w
