"""Live changes on a remote host of the rig, through the CLI over SSH (issue 15): a bridge-mode NIC added
to a running guest, whose tap QEMU creates on the host at `netdev_add` and whose ifup hook finds the file
the update wrote there, through the node interface (never a path of the controller's); then removed,
the same QEMU throughout, the guest seeing the NIC come and go.

The NIC has a `hook` of its own (it only notes what it was given), so no Linux bridge is needed and the
tap, in the host's network namespace, carries no traffic.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from executor.kit import BOOT_TIMEOUT

from reconciler.argv import tap_ifname
from reconciler.model import NodeSpec
from tests.remote import netns_rig, rig_look
from tests.remote.test_cli_remote import Fleet
from tests.remote.test_provision_remote import fleet  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(300)]

MAC0 = "52:54:00:15:00:01"
MAC1 = "52:54:00:15:00:02"


def test_a_bridge_nic_added_live_on_a_remote_host_runs_its_hook_there(
        fleet: Fleet, rig: netns_rig.Rig, tmp_path: Path) -> None:  # noqa: F811
    node, host = "node-h2", fleet.nodes["node-h2"]
    marker = tmp_path / "hook.log"  # /tmp is the same inside the host; its state directory is not
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $INTERFACE $MAC $INSTANCE" >> {marker}\n')
    hook.chmod(0o755)
    user = {"mode": "user", "mac": MAC0}
    fleet.declare("web", node, nics=[user])
    started = fleet.cli("apply", "--yes")
    assert started.returncode == 0, started.stdout + started.stderr
    serial = f"{fleet.state}/instances/web/serial.log"
    with rig_look.HostLog(rig, host, serial) as log:
        log.wait_for(re.compile(rf"report .*nics=eth0:{MAC0}"), BOOT_TIMEOUT)
        (pid,) = fleet.qemu_pids(node, "web")

        tap = {"mode": "bridge", "mac": MAC1, "bridge": "rcnobr0", "hook": str(hook)}
        fleet.declare("web", node, nics=[user, tap])
        plan = fleet.cli("plan")
        assert f"~ web on {node} (update in place)" in plan.stdout, plan.stdout + plan.stderr
        added = fleet.cli("apply", "--yes")
        assert added.returncode == 0 and f"NIC {MAC1} at slot" in added.stdout, added.stdout + added.stderr
        log.wait_for(re.compile(rf"report .*nics=.*{MAC1}"), 60)
        ifname = tap_ifname(NodeSpec(name=node, state_dir=fleet.state), "web", 1)  # the boot NIC has 0
        assert marker.read_text() == f"{ifname} {ifname} {MAC1} web\n"
        assert _has_link(rig, host, ifname)  # in the host's network namespace
        assert not Path(f"/sys/class/net/{ifname}").exists()  # not in the controller's
        assert fleet.qemu_pids(node, "web") == [pid]

        fleet.declare("web", node, nics=[user])
        removed = fleet.cli("apply", "--yes")
        assert removed.returncode == 0 and "removed" in removed.stdout, removed.stdout + removed.stderr
        log.wait_for(re.compile(rf"report .*nics=eth0:{MAC0}( |$)"), 60)
    assert not _has_link(rig, host, ifname)  # gone with its netdev
    assert fleet.qemu_pids(node, "web") == [pid]
    assert fleet.cli("plan", "--detailed-exitcode").returncode == 0


def _has_link(rig: netns_rig.Rig, host: netns_rig.Host, ifname: str) -> bool:
    return rig_look.run_in(rig, host, "ip", "link", "show", "dev", ifname, check=False).returncode == 0
