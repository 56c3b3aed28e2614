"""End-to-end: `plan` and `apply` create the disks a manifest declares with `size` or `baseImage` (issue 14),
on real QEMU (TCG) and the test guest. The plan lists each disk before anything exists; apply creates
them (recorded as owned in the node's state); the guest sees the overlay at its base's size and a blank
disk at its declared size; the guest's writes land in the overlay, never in the base; a missing base and
too little room are plan errors naming the file and the manifest line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AGENT_PORT_NAME, AGENT_STARTED_PREFIX, Guest, SerialLog, wait_for_report
from executor.kit import BOOT_TIMEOUT, World, make_world

from reconciler import guestagent, layout
from reconciler.provision import images

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MiB = 1024 * 1024
EVENT_TIMEOUT = 60.0
GUEST_ADDRESS = "198.18.254.2/24"
ADDRESS_SET = "reconciler-test: address set"


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_io(path: Path, command: str, fmt: str) -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], check=True, capture_output=True)


def make_base(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "32M"], check=True)
    qemu_io(path, "write -P 0x11 0 1M", "raw")
    return path


def agent_args(sock: Path) -> list[str]:
    """The guest agent's channel, QEMU a client of our listener (guestAgent itself is not wired yet)."""
    return ["-device", "virtio-serial", "-chardev", f"socket,id=agent0,path={sock}",
            "-device", f"virtserialport,chardev=agent0,name={AGENT_PORT_NAME}"]


def agent_call(conn: socket.socket, command: str, arguments: dict[str, object] | None = None) -> object:
    request: dict[str, object] = {"execute": command}
    if arguments is not None:
        request["arguments"] = arguments
    conn.sendall(json.dumps(request).encode() + b"\n")
    deadline = time.monotonic() + EVENT_TIMEOUT
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = conn.recv(65536)
        assert chunk, f"agent channel closed before answering {command}"
        data += chunk
    answer = json.loads(data)
    assert "return" in answer, answer
    return answer["return"]


def test_plan_lists_the_disks_then_apply_creates_them_and_the_guest_writes_only_the_overlay(
    world: World, tmp_path: Path
) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    base = make_base(images_dir / "base,with=commas.raw")  # hostile: QEMU option syntax in the name
    before = sha256(base)
    overlay, blank = images_dir / "prov1-root.qcow2", images_dir / "prov1-data.raw"
    sock_path = world.root / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    listener.settimeout(EVENT_TIMEOUT)
    disks = [{"path": str(overlay), "baseImage": str(base)}, {"path": str(blank), "size": "64M"}]
    world.instance("prov1", "node-a", disks=disks, qemuExtraArgs=agent_args(sock_path))
    try:
        plan = world.cli("plan")
        assert plan.code == 0, plan.text
        assert (f"+ create {overlay} on node-a for prov1: qcow2 overlay on {base} (raw; never written), "
                "32 MiB") in plan.out
        assert f"+ create {blank} on node-a for prov1: blank raw, 64 MiB" in plan.out
        assert "Plan: 1 to start, 0 to restart, 0 to migrate, 0 to stop, 2 disk images to create." in plan.out
        as_json = json.loads(world.cli("plan", "--json").out)
        assert as_json["disks"] == [
            {"instance": "prov1", "node": "node-a", "path": str(overlay), "op": "create", "size": 32 * MiB,
             "base": str(base), "base_format": "raw", "format": "qcow2", "reason": None},
            {"instance": "prov1", "node": "node-a", "path": str(blank), "op": "create", "size": 64 * MiB,
             "base": None, "base_format": None, "format": "raw", "reason": None},
        ]
        assert not overlay.exists() and not blank.exists()  # a plan creates nothing

        applied = world.apply()
        assert applied.code == 0, applied.text
        assert f"prov1: created disk image {overlay}" in applied.out
        node = world.node("node-a")
        owned = images.read_owned(layout.owned_image_record(node, str(overlay)))
        assert owned is not None and (owned.base, owned.instance) == (str(base), "prov1")
        blank_owned = images.read_owned(layout.owned_image_record(node, str(blank)))
        assert blank_owned is not None and blank_owned.size == 64 * MiB

        log = SerialLog(world.serial_log("node-a", "prov1"))
        log.wait_for("reconciler-guest: ready prov1", BOOT_TIMEOUT)
        report = wait_for_report(log, lambda r: "vdb" in r.blk, EVENT_TIMEOUT)
        assert (report.blk["vda"], report.blk["vdb"]) == (32 * MiB, 64 * MiB)

        conn, _ = listener.accept()
        with conn:
            log.wait_for(AGENT_STARTED_PREFIX, EVENT_TIMEOUT)
            handle = agent_call(conn, "guest-file-open", {"path": "/dev/vda", "mode": "r+"})
            data = base64.b64encode(b"\x5a" * 65536).decode()
            agent_call(conn, "guest-file-write", {"handle": handle, "buf-b64": data})
            agent_call(conn, "guest-file-close", {"handle": handle})  # the last close syncs the device

        world.instance("prov1", "node-a", disks=disks, qemuExtraArgs=agent_args(sock_path),
                       runStrategy="Halted")
        stopped = world.apply()
        assert stopped.code == 0 and "prov1: stopped on node-a" in stopped.out, stopped.text
    finally:
        listener.close()
    assert sha256(base) == before  # the guest's write went to the overlay
    qemu_io(overlay, "read -P 0x5a 0 64k", "qcow2")
    qemu_io(overlay, "read -P 0x11 64k 960k", "qcow2")  # the base still shows through elsewhere
    assert "No changes" in world.apply().out


def test_a_missing_base_and_too_little_room_are_plan_errors_naming_the_file(world: World,
                                                                           tmp_path: Path) -> None:
    missing = tmp_path / "no-such-base.qcow2"
    world.instance("nobase", "node-a",
                   disks=[{"path": str(tmp_path / "nobase.qcow2"), "baseImage": str(missing)}])
    world.instance("huge", "node-a", disks=[{"path": str(tmp_path / "huge.raw"), "size": "64T"}])
    plan = world.cli("plan")
    assert plan.code != 0
    errors = [ln.strip() for ln in plan.out.splitlines() if ln.strip().startswith("x ")]
    manifest = world.manifests
    assert len(errors) == 2, plan.out
    assert errors[0].startswith(f"x {manifest / 'huge.yaml'}:")
    assert f"instance huge: spec.disks[0].size: disk image {tmp_path / 'huge.raw'}: needs 64 TiB, but its " \
           "filesystem has " in errors[0] and errors[0].endswith(" free")
    assert errors[1].startswith(f"x {manifest / 'nobase.yaml'}:")
    assert f"instance nobase: spec.disks[0].baseImage: base image: disk image {missing}: " in errors[1]
    assert "No such file" in errors[1]
    applied = world.apply()
    assert applied.code != 0
    assert not (tmp_path / "nobase.qcow2").exists() and not (tmp_path / "huge.raw").exists()
    assert world.qemu_pids() == []


def test_delete_policy_removes_only_images_the_reconciler_created(world: World, tmp_path: Path) -> None:
    d = tmp_path / "disks"
    d.mkdir()
    mine, theirs, kept, dropped = d / "p1-a.raw", d / "p1-users.raw", d / "p2-b.raw", d / "p2-c.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(theirs), "16M"], check=True)
    qemu_io(theirs, "write -P 0x33 0 64k", "raw")
    users_sum = sha256(theirs)

    def disk(path: Path) -> dict[str, str]:
        return {"path": str(path), "size": "16M", "deletePolicy": "Delete"}

    world.instance("p1", "node-a", disks=[disk(mine), disk(theirs)])  # theirs exists: used, never ours
    world.instance("p2", "node-a", disks=[disk(kept), disk(dropped)])
    first = world.apply()
    assert first.code == 0, first.text
    assert f"+ create {theirs}" not in first.out and all(p.exists() for p in (mine, kept, dropped))

    # A removed entry of a protected instance: the deletion is refused, nothing happens.
    world.instance("p2", "node-a", disks=[disk(kept)], protect=True)
    protected = world.cli("plan")
    assert protected.code != 0
    assert (f"x instance p2: protect: true; deletePolicy Delete would delete disk image {dropped} (its entry "
            "was removed)") in protected.out, protected.out
    # Unprotected: the plan restarts p2 without the disk, then deletes it, as a line of its own.
    world.instance("p2", "node-a", disks=[disk(kept)])
    plan = world.cli("plan")
    line = (f"- delete {dropped} on node-a (of p2: created by the reconciler, deletePolicy Delete; "
            "disk entry removed)")
    assert line in plan.out and "-/+ p2 on node-a" in plan.out, plan.out
    removed = world.apply()
    assert removed.code == 0, removed.text
    assert f"p2: deleted disk image {dropped}" in removed.out and not dropped.exists() and kept.exists()

    # Prune p1, but first swap a symlink in for its owned image: refused, nothing removed.
    world.remove("p1")
    pruning = world.cli("plan", "--prune")
    assert f"- delete {mine} on node-a (of p1: created by the reconciler, deletePolicy Delete; instance " \
           "pruned)" in pruning.out, pruning.out
    assert f"delete {theirs}" not in pruning.out  # not created by the reconciler: never deleted
    moved = d / "moved.raw"
    mine.rename(moved)
    mine.symlink_to(moved)
    pruned = world.apply("--prune")
    assert pruned.code != 0, pruned.text
    refusal = [ln for ln in pruned.out.splitlines() if "delete disk image FAILED" in ln]
    assert refusal == [f"p1: delete disk image FAILED: disk image {mine}: is now a symlink, not the image "
                       "the reconciler created; not deleted"], pruned.out
    assert mine.is_symlink() and moved.exists()
    assert theirs.exists() and sha256(theirs) == users_sum
    assert world.qemu_pids("p1") == []


def test_the_guest_reads_the_seed_and_a_changed_user_data_is_a_new_instance_id(world: World) -> None:
    from reconciler.provision.seed import SeedSpec, build_seed

    seeds = world.manifests / "seeds"
    seeds.mkdir()
    secret = "$6$rounds=4096$salt$not-for-plans"
    user_data = f"#cloud-config\nusers:\n  - name: ops\n    passwd: {secret}\n"
    (seeds / "c1.user-data").write_text(user_data)
    world.instance("c1", "node-a", cloudInit={"userDataFile": "seeds/c1.user-data"})
    first = world.apply()
    assert first.code == 0, first.text
    iso = Path(world.paths("node-a", "c1").seed)
    assert oct(iso.stat().st_mode & 0o777) == "0o600"
    log = SerialLog(world.serial_log("node-a", "c1"))
    line = log.wait_for("reconciler-guest: seed ", EVENT_TIMEOUT)
    want = build_seed("c1", SeedSpec(user_data=user_data))
    digest = hashlib.sha256(user_data.encode()).hexdigest()
    assert line == f"reconciler-guest: seed instance-id={want.instance_id} user-data-sha256={digest} " \
                   "device=sr0"

    changed = user_data + "hostname: c1-renamed\n"
    (seeds / "c1.user-data").write_text(changed)
    new = build_seed("c1", SeedSpec(user_data=changed))
    assert new.instance_id != want.instance_id
    plan = world.cli("plan")
    assert plan.code == 0, plan.text
    assert (f'      cloud_init: "seed sha256:{want.digest[:12]} (instance-id {want.instance_id})" -> '
            f'"seed sha256:{new.digest[:12]} (instance-id {new.instance_id})"  # forces restart') in plan.out
    assert secret not in plan.out and secret not in world.cli("plan", "--json").out
    again = world.apply()
    assert again.code == 0, again.text
    assert secret not in again.out
    log = SerialLog(world.serial_log("node-a", "c1"))
    line = log.wait_for(f"reconciler-guest: seed instance-id={new.instance_id} ", EVENT_TIMEOUT)
    assert line.endswith(f"user-data-sha256={hashlib.sha256(changed.encode()).hexdigest()} device=sr0")


def test_seed_files_outside_the_manifests_are_refused_in_one_line(world: World) -> None:
    world.instance("c2", "node-a", cloudInit={"userDataFile": "../../etc/shadow"})
    refused = world.cli("validate")
    assert refused.code != 0
    lines = [ln for ln in refused.text.splitlines() if "c2" in ln]
    assert len(lines) == 1 and lines[0].endswith(
        "instance c2: spec.cloudInit.userDataFile: userDataFile '../../etc/shadow' must stay inside the "
        "manifest's directory (a relative path, without ..)"), refused.text
    (world.manifests / "escape").symlink_to("/etc")
    world.instance("c2", "node-a", cloudInit={"userDataFile": "escape/hostname"})
    plan = world.cli("plan")
    lines = [ln for ln in plan.text.splitlines() if "c2" in ln]
    assert plan.code != 0 and len(lines) == 1, plan.text
    assert lines[0].endswith("instance c2: spec.cloudInit.userDataFile: userDataFile 'escape/hostname' leads "
                             "outside the manifest's directory (/etc/hostname); refused"), plan.text
    assert world.qemu_pids() == []


def test_a_guest_that_ignores_acpi_stops_through_its_agent(world: World) -> None:
    import asyncio

    from reconciler.node import LocalNode

    world.instance("ga1", "node-a", ignore_acpi=True, guestAgent=True, shutdownTimeout="2s")
    assert world.apply().code == 0
    log = SerialLog(world.serial_log("node-a", "ga1"))
    log.wait_for(AGENT_STARTED_PREFIX, BOOT_TIMEOUT)
    sock = Path(world.paths("node-a", "ga1").agent)
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert asyncio.run(LocalNode(world.node("node-a")).guest_agent("ga1", "guest-ping", 10.0)) == {}

    world.instance("ga1", "node-a", ignore_acpi=True, guestAgent=True, shutdownTimeout="2s",
                   runStrategy="Halted")
    stopped = world.apply()
    assert stopped.code == 0, stopped.text
    assert "ga1: stopped on node-a (guest agent shutdown)" in stopped.out, stopped.out
    log.wait_for("reconciler-guest: agent shutdown, powering off", EVENT_TIMEOUT)
    assert world.qemu_pids("ga1") == []


@pytest.mark.skipif(not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists(), reason="ovmf missing (.ci/setup)")
@pytest.mark.timeout(420)
def test_a_uefi_guest_boots_through_ovmf_and_keeps_its_nvram_across_a_restart_and_a_migration(
        world: World) -> None:
    uefi_boot = 180.0  # OVMF under TCG on shared cores: tens of seconds
    template = Path("/usr/share/OVMF/OVMF_VARS_4M.fd").read_bytes()
    world.instance("fw1", "node-a", firmware="uefi", memory="256M")
    first = world.apply()
    assert first.code == 0, first.text
    serial = world.serial_log("node-a", "fw1")
    SerialLog(serial).wait_for("reconciler-guest: ready fw1", uefi_boot)
    before_ready = serial.read_bytes().split(b"reconciler-guest: ready")[0]
    assert b"\x1b[" in before_ready  # OVMF's console set-up on the serial port, then the kernel's line
    nvram = Path(world.paths("node-a", "fw1").nvram)
    assert oct(nvram.stat().st_mode & 0o777) == "0o600"
    written = nvram.read_bytes()
    assert len(written) == len(template) and written != template  # the firmware stored its variables
    inode = nvram.stat().st_ino

    world.instance("fw1", "node-a", firmware="uefi", memory="272M")  # forces a new QEMU process
    again = world.apply()
    assert again.code == 0 and "1 restarted" in again.out, again.text
    SerialLog(serial).wait_for("reconciler-guest: ready fw1", uefi_boot)
    assert nvram.stat().st_ino == inode and nvram.read_bytes() != template  # kept, not copied afresh

    stored = nvram.read_bytes()
    world.instance("fw1", "node-b", firmware="uefi", memory="272M")  # a live migration: the store goes too
    moved = world.apply()
    assert moved.code == 0 and "1 migrated" in moved.out, moved.text
    there = Path(world.paths("node-b", "fw1").nvram)
    assert there.read_bytes() == stored and not nvram.exists()  # before: OVMF's template on node-b


@pytest.mark.skipif(not Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd").exists(), reason="ovmf missing")
@pytest.mark.timeout(300)
def test_secure_boot_boots_through_the_secure_build_and_the_guest_sees_secure_boot_enabled(
        world: World, guest: Guest) -> None:
    """secureBoot: OVMF's secure-boot build (SMM, a secure pflash) with Microsoft's keys enrolled in the
    instance's variable store. What is asserted is what the guest sees: the firmware says Secure Boot is
    on (the kernel's EFI stub reads it, the kernel locks itself down). Not asserted: that the kernel was
    verified. Debian's kernel is signed by Debian, not by a key in that store; OVMF's loader of a kernel
    given to QEMU (`kernel:`) falls back to its legacy loader when the image does not verify (Debian 12's
    OVMF), so a direct kernel boots unverified. A verified chain is shim from a disk (docs/manifests.md)."""
    uefi_boot = 180.0
    template = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").read_bytes()
    kernel = {"path": str(guest.kernel), "initrd": str(guest.initrd), "root": "/dev/ram0",
              "cmdline": "panic=-1 reconciler.tag=sb1"}  # not quiet: the EFI stub's and kernel's lines
    world.instance("sb1", "node-a", firmware="uefi", secureBoot=True, machine="q35", memory="256M",
                   kernel=kernel)
    done = world.apply()
    assert done.code == 0, done.text
    serial = world.serial_log("node-a", "sb1")
    SerialLog(serial).wait_for("reconciler-guest: ready sb1", uefi_boot)
    boot = serial.read_bytes().split(b"reconciler-guest: ready")[0]
    assert b"\x1b[" in boot.split(b"Linux version")[0]  # OVMF's console set-up came first
    assert b"EFI stub: UEFI Secure Boot is enabled." in boot, boot[-2000:]
    assert b"secureboot: Secure boot enabled" in boot
    assert b"Kernel is locked down from EFI Secure Boot" in boot
    (pid,) = world.qemu_pids("sb1")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"filename=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" in b",".join(argv)
    assert b"driver=cfi.pflash01,property=secure,value=on" in argv
    nvram = Path(world.paths("node-a", "sb1").nvram)
    assert nvram.stat().st_size == len(template) and oct(nvram.stat().st_mode & 0o777) == "0o600"


def test_a_blank_disk_grows_live_and_a_shrink_is_refused(world: World, tmp_path: Path) -> None:
    data = tmp_path / "grow.raw"
    world.instance("gr1", "node-a", disks=[{"path": str(data), "size": "64M"}])
    assert world.apply().code == 0
    log = SerialLog(world.serial_log("node-a", "gr1"))
    log.wait_for("reconciler-guest: ready gr1", BOOT_TIMEOUT)
    assert wait_for_report(log, lambda r: "vda" in r.blk, EVENT_TIMEOUT).blk["vda"] == 64 * MiB
    (pid,) = world.qemu_pids("gr1")

    world.instance("gr1", "node-a", disks=[{"path": str(data), "size": "96M"}])
    plan = world.cli("plan")
    assert plan.code == 0, plan.text
    assert "~ gr1 on node-a (record updated in place)" in plan.out, plan.out
    assert f"disks[0].size: {64 * MiB} -> {96 * MiB}\n" in plan.out  # no "# forces restart"
    grown = world.apply()
    assert grown.code == 0, grown.text
    assert f"gr1: grew {data} to 96 MiB live (block_resize) on node-a, record updated" in grown.out, grown.out
    assert wait_for_report(log, lambda r: r.blk.get("vda") == 96 * MiB, EVENT_TIMEOUT)  # no reboot
    assert world.qemu_pids("gr1") == [pid]
    assert "No changes" in world.cli("plan").out

    world.instance("gr1", "node-a", disks=[{"path": str(data), "size": "32M"}])
    shrink = world.cli("plan")
    assert shrink.code != 0
    assert ("x instance gr1: spec.disks[0].size: 96 MiB -> 32 MiB: a disk is never shrunk (the data past "
            "the new end would be lost)") in shrink.out, shrink.out
    assert world.apply().code != 0 and world.qemu_pids("gr1") == [pid] and data.stat().st_size == 96 * MiB


def test_status_shows_that_the_agent_answers_and_the_guests_interfaces(world: World) -> None:
    world.instance("ga2", "node-a", guestAgent=True)
    assert world.apply().code == 0
    SerialLog(world.serial_log("node-a", "ga2")).wait_for(AGENT_STARTED_PREFIX, BOOT_TIMEOUT)
    mac = world.instances["ga2"]["nics"][0]["mac"]
    rows = json.loads(world.cli("status", "--json").out)["instances"]
    (row,) = [r for r in rows if r["name"] == "ga2"]
    assert row["agent"]["answers"] is True, row
    assert [(i["name"], i["mac"], i["addresses"]) for i in row["agent"]["interfaces"]] == [("eth0", mac, [])]
    table = world.cli("status").out
    assert "agent: answers (no address)" in next(ln for ln in table.splitlines() if ln.startswith("ga2 "))

    # The test guest configures no network itself: eth0 gets an address through the agent (busybox ip),
    # which the guest then reports like any other (inside the guest only: no traffic leaves it).
    script = (f"ip addr add {GUEST_ADDRESS} dev eth0 && ip link set eth0 up && "
              f"echo {ADDRESS_SET} > /dev/console")
    log = SerialLog(world.serial_log("node-a", "ga2"))
    asyncio.run(guestagent.call(world.paths("node-a", "ga2").agent, "guest-exec", EVENT_TIMEOUT,
                                {"path": "/bin/sh", "arg": ["-c", script]}))
    log.wait_for(ADDRESS_SET, EVENT_TIMEOUT)
    rows = json.loads(world.cli("status", "--json").out)["instances"]
    (row,) = [r for r in rows if r["name"] == "ga2"]
    (eth0,) = row["agent"]["interfaces"]
    assert eth0["name"] == "eth0" and eth0["addresses"][0] == GUEST_ADDRESS, eth0  # then IPv6 link-local
    table = world.cli("status").out
    assert f"agent: {GUEST_ADDRESS}" in next(ln for ln in table.splitlines() if ln.startswith("ga2 ")), table


def test_a_saved_plan_creates_its_disk_once(world: World, tmp_path: Path) -> None:
    disk = tmp_path / "saved.raw"
    world.instance("sp1", "node-a", disks=[{"path": str(disk), "size": "16M"}])
    saved = tmp_path / "plan.json"
    assert world.cli("plan", "--out", str(saved)).code == 0
    assert [d["path"] for d in json.loads(saved.read_text())["plan"]["disks"]] == [str(disk)]
    applied = world.cli("apply", "--plan", str(saved))
    assert applied.code == 0, applied.text
    assert applied.out.count(f"+ create {disk} ") == 1, applied.out  # checked again, listed once
    assert disk.stat().st_size == 16 * MiB
