"""Fixtures for tests that cross a real network to real sshd hosts (see netns_rig.py).

`rig` (module scope) builds three hosts and tears them down after the module, asserting that nothing
of the rig is left behind: no namespace, link or process. The CLI runs of the module keep their link
keepers (reconciler.remote.keeper) in the rig's own directory (RECONCILER_LINK_DIR): the teardown ends
them, and a keeper left running would show as a process of the rig.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.remote import keeperclient
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
    saved = os.environ.get("RECONCILER_LINK_DIR")
    os.environ["RECONCILER_LINK_DIR"] = link_dir(built)
    try:
        yield built
    finally:
        try:
            keeperclient.close_all(link_dir(built))
        finally:
            if saved is None:
                os.environ.pop("RECONCILER_LINK_DIR", None)
            else:
                os.environ["RECONCILER_LINK_DIR"] = saved
            built.down()
    assert rig_leftovers(built) == []


def link_dir(rig: netns_rig.Rig) -> str:
    """Where the link keepers of the CLI runs on `rig` live (their command lines name it)."""
    return os.path.join(rig.dir, "links")
