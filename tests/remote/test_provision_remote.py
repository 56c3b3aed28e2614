"""Provisioning on a remote host of the rig, through the CLI over SSH (issue 14): `apply` creates a qcow2
overlay on a base image and a cloud-init seed on the host (recorded as owned there), the guest boots from
them and reads the seed; `status` and `status --json` show that the guest agent answers and the guest's
addresses, asked over the same link; a blank disk grown in the manifest is grown live on the host
(block_resize), the same QEMU, the guest seeing the new size.

The test guest configures no network of its own: the test gives eth0 an address through the agent
(guest-exec of busybox `ip`, run inside the host, where the agent's socket is), which the guest then
reports through guest-network-get-interfaces like any other address.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AGENT_STARTED_PREFIX, Guest
from executor.kit import BOOT_TIMEOUT

from tests.remote import netns_rig, rig_look
from tests.remote.test_cli_remote import Fleet

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(300)]

MiB = 1024 * 1024
MAC = "52:54:00:14:00:02"
GUEST_ADDRESS = "198.18.254.2/24"  # inside the guest only: no traffic leaves it
USER_DATA = "#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys: [ssh-ed25519 AAAAC3 ops]\n"

# Run inside the host: guest-exec through the agent's socket (the reconciler's own client); the command
# prints its words on the guest's serial console when the address is set, which the test waits for.
_GUEST_EXEC = """
import asyncio, sys
from reconciler import guestagent
script = "ip addr add %s dev eth0 && ip link set eth0 up && echo reconciler-test: address set > /dev/console"
args = {"path": "/bin/sh", "arg": ["-c", script % sys.argv[2]]}
print(asyncio.run(guestagent.call(sys.argv[1], "guest-exec", 30.0, args)))
"""


@pytest.fixture
def fleet(rig: netns_rig.Rig, guest: Guest, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Fleet]:
    made = Fleet(rig, guest, tmp_path / "manifests", request.node.name[:40])
    made.write_nodes()
    try:
        yield made
        assert not {n: w for n, w in made.copies().items() if len(w) > 1}
    finally:
        made.teardown()
    assert made.copies() == {}, "QEMUs left behind"


def _disks_dir(fleet: Fleet, node: str) -> str:
    """A directory on the host's own filesystem (its state tmpfs) for the disks the reconciler creates."""
    where = f"{fleet.state}/disks"
    fleet.on_host(node, "mkdir", "-p", where)
    return where


def test_apply_creates_an_overlay_and_a_seed_on_the_host_and_status_shows_the_agent_over_ssh(
        fleet: Fleet, rig: netns_rig.Rig, tmp_path: Path) -> None:
    base = tmp_path / "base.raw"  # on the filesystem the hosts share: only read, never written
    base.write_bytes(b"\x11" * MiB + b"\0" * (31 * MiB))
    base_sum = hashlib.sha256(base.read_bytes()).hexdigest()
    node, host = "node-h2", fleet.nodes["node-h2"]
    overlay = f"{_disks_dir(fleet, node)}/web.qcow2"
    fleet.declare("web", node, guestAgent=True, disks=[{"path": overlay, "baseImage": str(base)}],
                  cloudInit={"userData": USER_DATA}, nics=[{"mode": "user", "mac": MAC}])

    plan = fleet.cli("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert (f"+ create {overlay} on {node} for web: qcow2 overlay on {base} (raw; never written), "
            "32 MiB") in plan.stdout, plan.stdout
    done = fleet.cli("apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr

    info = json.loads(fleet.on_host(node, "qemu-img", "info", "-U", "--output=json", overlay))
    assert (info["format"], info["backing-filename"], info["virtual-size"]) == ("qcow2", str(base), 32 * MiB)
    owned = rig_look.python_in(rig, host, "import sys, glob; print(*glob.glob(sys.argv[1]))",
                               f"{fleet.state}/images/*.json")
    (record,) = owned.split()
    assert json.loads(fleet.on_host(node, "cat", record))["path"] == overlay
    serial = f"{fleet.state}/instances/web/serial.log"
    with rig_look.HostLog(rig, host, serial) as log:
        seed = log.wait_for("reconciler-guest: seed ", BOOT_TIMEOUT)
        assert f"user-data-sha256={hashlib.sha256(USER_DATA.encode()).hexdigest()}" in seed, seed
        log.wait_for(AGENT_STARTED_PREFIX, BOOT_TIMEOUT)

        rows = json.loads(fleet.cli("status", "--json").stdout)["instances"]
        (row,) = [r for r in rows if (r["name"], r["node"]) == ("web", node)]
        assert row["agent"]["answers"] is True, row
        assert [(i["name"], i["mac"], i["addresses"]) for i in row["agent"]["interfaces"]] == [
            ("eth0", MAC, [])], row  # no address yet

        sock = f"{fleet.state}/instances/web/agent.sock"
        rig_look.python_in(rig, host, _GUEST_EXEC, sock, GUEST_ADDRESS)
        log.wait_for("reconciler-test: address set", 60)
    rows = json.loads(fleet.cli("status", "--json").stdout)["instances"]
    (row,) = [r for r in rows if (r["name"], r["node"]) == ("web", node)]
    (eth0,) = row["agent"]["interfaces"]
    assert eth0["name"] == "eth0" and eth0["addresses"][0] == GUEST_ADDRESS, eth0  # then IPv6 link-local
    table = fleet.cli("status").stdout
    line = next(ln for ln in table.splitlines() if ln.startswith("web "))
    assert f"agent: {GUEST_ADDRESS}" in line, table
    assert hashlib.sha256(base.read_bytes()).hexdigest() == base_sum


def test_a_blank_disk_on_a_remote_host_grows_live(fleet: Fleet, rig: netns_rig.Rig) -> None:
    node, host = "node-h3", fleet.nodes["node-h3"]
    data = f"{_disks_dir(fleet, node)}/data.raw"
    fleet.declare("db", node, disks=[{"path": data, "size": "64M"}])
    assert fleet.cli("apply", "--yes").returncode == 0
    serial = f"{fleet.state}/instances/db/serial.log"
    with rig_look.HostLog(rig, host, serial) as log:
        log.wait_for(re.compile(rf"report .*blk=(.*,)?vda:{64 * MiB}\b"), BOOT_TIMEOUT)
        (pid,) = fleet.qemu_pids(node, "db")

        fleet.declare("db", node, disks=[{"path": data, "size": "96M"}])
        plan = fleet.cli("plan")
        assert "~ db on node-h3 (record updated in place)" in plan.stdout, plan.stdout + plan.stderr
        grown = fleet.cli("apply", "--yes")
        assert grown.returncode == 0, grown.stdout + grown.stderr
        assert f"db: grew {data} to 96 MiB live (block_resize) on node-h3" in grown.stdout, grown.stdout
        log.wait_for(re.compile(rf"report .*blk=(.*,)?vda:{96 * MiB}\b"), 60)  # no reboot
    assert fleet.qemu_pids(node, "db") == [pid]
    assert fleet.on_host(node, "stat", "-c", "%s", data).strip() == str(96 * MiB)
    assert fleet.cli("plan", "--detailed-exitcode").returncode == 0
