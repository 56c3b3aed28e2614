"""Fixtures for tests that cross a real network to real sshd hosts (see netns_rig.py).

`rig` (module scope) builds three hosts and tears them down after the module, asserting that nothing
of the rig is left behind: no namespace, link or process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote import netns_rig


def rig_leftovers(rig: netns_rig.Rig) -> list[str]:
    """What of `rig` still exists: namespaces, links, processes started for it."""
    left: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    left += [f"netns {h.netns}" for h in rig.hosts if h.netns in netns]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    left += [f"link {name}" for name in [rig.bridge, *(h.veth for h in rig.hosts)] if f" {name}" in links
             or f" {name}@" in links]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if rig.dir.encode() in cmd:
                words = cmd.replace(b"\0", b" ")[:120]
                left.append(f"process {pid}: {words!r}")
    return left


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns_rig.Rig]:
    if os.geteuid() != 0 or shutil.which(netns_rig.SSHD) is None:
        pytest.skip("the remote-host rig needs root and openssh-server (bash .ci/setup installs it)")
    built = netns_rig.Rig.up(3, tmp_path_factory.mktemp("rig"))
    try:
        yield built
    finally:
        built.down()
    assert rig_leftovers(built) == []
