"""Table-driven: which disk, NIC and VNC changes the planner makes live (an UPDATE in the running QEMU) and
which restart (reconciler.devplug's rules), with the exact changes and text the plan shows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from reconciler import devplug
from reconciler.actual import ActualInstance, ActualState
from reconciler.model import (
    CacheMode,
    DesiredState,
    Disk,
    DiskBus,
    InstanceSpec,
    Nic,
    NicMode,
    UpdatePolicy,
    Vnc,
)
from reconciler.planner import make_plan
from reconciler.render.text import render_text

from .factories import actual, brief, changed, desired, rec, spec

SYS = Disk("/d/sys.img", boot=True)
DATA = Disk("/d/data.img")
EXTRA = Disk("/d/extra.img")
N0 = Nic("52:54:00:00:00:01", mode=NicMode.USER)
N1 = Nic("52:54:00:00:00:02", mode=NicMode.USER)
BASE = spec("web", 512, node="a", disks=(SYS,), nics=(N0,))
VNC = Vnc(password_file="/etc/rc/vnc.pw")


def booted_as(boot: InstanceSpec, now: InstanceSpec) -> ActualInstance:
    """The record of a QEMU started as `boot` that has `now` after live changes."""
    return replace(rec(now, "a"), boot_spec=boot)


@dataclass(frozen=True)
class Case:
    id: str
    desired: DesiredState
    actual: ActualState
    actions: list[str]
    changes: list[str] = field(default_factory=list)  # "path old->new class" of the first action
    pending: list[str] = field(default_factory=list)


CASES = [
    Case("disk-added", desired(changed(BASE, disks=(SYS, DATA))), actual(rec(BASE, "a")),
         ["update web a live_update"],
         ['disks[1] null->{"path":"/d/data.img","format":"raw","bus":"virtio","read_only":false,'
          '"cache":"none","boot":false,"size":null,"base_image":null,"delete_policy":"Retain"} live']),
    Case("disk-added-live-removed", desired(BASE), actual(booted_as(BASE, changed(BASE, disks=(SYS, DATA)))),
         ["update web a live_update"],
         ['disks[1] {"path":"/d/data.img","format":"raw","bus":"virtio","read_only":false,"cache":"none",'
          '"boot":false,"size":null,"base_image":null,"delete_policy":"Retain"}->null live']),
    Case("boot-time-disk-removed-restarts", desired(changed(BASE, disks=(SYS,))),
         actual(rec(changed(BASE, disks=(SYS, DATA)), "a")), ["restart web a spec_changed"],
         ['disks[1] {"path":"/d/data.img","format":"raw","bus":"virtio","read_only":false,"cache":"none",'
          '"boot":false,"size":null,"base_image":null,"delete_policy":"Retain"}->null restart']),
    Case("ide-disk-added-restarts", desired(changed(BASE, disks=(SYS, replace(DATA, bus=DiskBus.IDE)))),
         actual(rec(BASE, "a")), ["restart web a spec_changed"],
         ['disks[1] null->{"path":"/d/data.img","format":"raw","bus":"ide","read_only":false,"cache":"none",'
          '"boot":false,"size":null,"base_image":null,"delete_policy":"Retain"} restart']),
    Case("q35-disk-added-restarts", desired(changed(BASE, machine="q35", disks=(SYS, DATA))),
         actual(rec(changed(BASE, machine="q35"), "a")), ["restart web a spec_changed"],
         ['disks[1] null->{"path":"/d/data.img","format":"raw","bus":"virtio","read_only":false,'
          '"cache":"none","boot":false,"size":null,"base_image":null,"delete_policy":"Retain"} restart']),
    Case("read-only-restarts", desired(changed(BASE, disks=(SYS, replace(DATA, read_only=True)))),
         actual(rec(changed(BASE, disks=(SYS, DATA)), "a")), ["restart web a spec_changed"],
         ["disks[1].read_only false->true restart"]),
    Case("cache-same-write-cache-live",
         desired(changed(BASE, disks=(SYS, replace(DATA, cache=CacheMode.WRITEBACK)))),
         actual(rec(changed(BASE, disks=(SYS, DATA)), "a")), ["update web a live_update"],
         ['disks[1].cache "none"->"writeback" live']),
    Case("cache-other-write-cache-restarts",
         desired(changed(BASE, disks=(SYS, replace(DATA, cache=CacheMode.DIRECTSYNC)))),
         actual(rec(changed(BASE, disks=(SYS, DATA)), "a")), ["restart web a spec_changed"],
         ['disks[1].cache "none"->"directsync" restart']),
    Case("nic-added", desired(changed(BASE, nics=(N0, N1))), actual(rec(BASE, "a")),
         ["update web a live_update"],
         ['nics[1] null->{"mac":"52:54:00:00:00:02","model":"virtio","mode":"user","bridge":null,"ip":null,'
          '"hook":null} live']),
    Case("nic-added-live-removed", desired(BASE), actual(booted_as(BASE, changed(BASE, nics=(N0, N1)))),
         ["update web a live_update"],
         ['nics[1] {"mac":"52:54:00:00:00:02","model":"virtio","mode":"user","bridge":null,"ip":null,'
          '"hook":null}->null live']),
    Case("boot-time-nic-removed-restarts", desired(changed(BASE, nics=())), actual(rec(BASE, "a")),
         ["restart web a spec_changed"],
         ['nics[0] {"mac":"52:54:00:00:00:01","model":"virtio","mode":"user","bridge":null,"ip":null,'
          '"hook":null}->null restart']),
    Case("nic-model-changed-restarts", desired(changed(BASE, nics=(replace(N0, model=N0.model.E1000),))),
         actual(rec(BASE, "a")), ["restart web a spec_changed"], ['nics[0].model "virtio"->"e1000" restart']),
    Case("disk-and-nic-added-with-a-record-field",
         desired(changed(BASE, disks=(SYS, DATA), nics=(N0, N1), protect=True)),
         actual(rec(BASE, "a")), ["update web a live_update"],
         ["protect false->true record",
          'disks[1] null->{"path":"/d/data.img","format":"raw","bus":"virtio","read_only":false,'
          '"cache":"none","boot":false,"size":null,"base_image":null,"delete_policy":"Retain"} live',
          'nics[1] null->{"mac":"52:54:00:00:00:02","model":"virtio","mode":"user","bridge":null,"ip":null,'
          '"hook":null} live']),
    Case("disk-added-with-pending-restart-part",
         desired(changed(BASE, disks=(SYS, DATA), acpi=False, update_policy=UpdatePolicy.PENDING)),
         actual(rec(changed(BASE, update_policy=UpdatePolicy.PENDING), "a")), ["update web a live_update"],
         ['disks[1] null->{"path":"/d/data.img","format":"raw","bus":"virtio","read_only":false,'
          '"cache":"none","boot":false,"size":null,"base_image":null,"delete_policy":"Retain"} live'],
         pending=["update_pending: acpi"]),
    Case("vnc-password-file-live", desired(changed(BASE, vnc=replace(VNC, password_file="/etc/rc/new.pw"))),
         actual(rec(changed(BASE, vnc=VNC), "a")), ["update web a live_update"],
         ['vnc.password_file "/etc/rc/vnc.pw"->"/etc/rc/new.pw" live']),
    Case("vnc-on-restarts", desired(changed(BASE, vnc=VNC)), actual(rec(BASE, "a")),
         ["restart web a spec_changed"],
         ['vnc null->{"bind":"127.0.0.1","display":0,"password_file":"/etc/rc/vnc.pw","tls":null} restart']),
    Case("vnc-password-dropped-restarts", desired(changed(BASE, vnc=Vnc())),
         actual(rec(changed(BASE, vnc=VNC), "a")),
         ["restart web a spec_changed"], ['vnc.password_file "/etc/rc/vnc.pw"->null restart']),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_live_device_case(case: Case) -> None:
    plan = make_plan(case.desired, case.actual)
    assert brief(plan) == case.actions
    got = [f"{c.path} {c.old}->{c.new} {c.change_class.value}" for c in plan.actions[0].changes] \
        if plan.actions else []
    assert got == case.changes
    assert [f"{p.reason.value}: " + " ".join(c.path for c in p.changes) for p in plan.pending] == case.pending
    assert not plan.errors


def test_text_of_a_disk_added_live() -> None:
    plan = make_plan(desired(changed(BASE, nics=(N0, N1))), actual(rec(BASE, "a")))
    assert render_text(plan) == (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  ~ web on a (update in place)\n"
        "      # changed in the running QEMU (hotplug, balloon); no restart needed\n"
        '      nics[1]: null -> {"mac":"52:54:00:00:00:02","model":"virtio","mode":"user","bridge":null,'
        '"ip":null,"hook":null}  # live\n'
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop, 1 record to update in place (no restart).\n"
    )


@dataclass(frozen=True)
class Rule:
    id: str
    boot: InstanceSpec
    old: InstanceSpec
    new: InstanceSpec
    want: devplug.DeviceChange | None


RULES = [
    Rule("nothing", BASE, BASE, BASE, devplug.DeviceChange()),
    Rule("reordered", changed(BASE, disks=(SYS, DATA, EXTRA)), changed(BASE, disks=(SYS, DATA, EXTRA)),
         changed(BASE, disks=(SYS, EXTRA, DATA)), devplug.DeviceChange()),
    Rule("add-two", BASE, BASE, changed(BASE, disks=(SYS, DATA, EXTRA)),
         devplug.DeviceChange(add_disks=(DATA, EXTRA))),
    Rule("remove-live-add-other", BASE, changed(BASE, disks=(SYS, DATA)), changed(BASE, disks=(SYS, EXTRA)),
         devplug.DeviceChange(remove_disks=(DATA,), add_disks=(EXTRA,))),
    Rule("remove-booted", changed(BASE, disks=(SYS, DATA)), changed(BASE, disks=(SYS, DATA)), BASE, None),
    Rule("boot-disk-added", changed(BASE, disks=()), changed(BASE, disks=()), changed(BASE, disks=(SYS,)),
         None),
    Rule("grown-and-added", changed(BASE, disks=(SYS, replace(DATA, size=1 << 20))),
         changed(BASE, disks=(SYS, replace(DATA, size=1 << 20))),
         changed(BASE, disks=(SYS, replace(DATA, size=2 << 20), EXTRA)),
         devplug.DeviceChange(add_disks=(EXTRA,))),
    Rule("cache-reopen", changed(BASE, disks=(SYS, DATA)), changed(BASE, disks=(SYS, DATA)),
         changed(BASE, disks=(SYS, replace(DATA, cache=CacheMode.UNSAFE))),
         devplug.DeviceChange(reopen_disks=(replace(DATA, cache=CacheMode.UNSAFE),))),
    Rule("cache-of-an-overlay", changed(BASE, disks=(SYS, replace(DATA, base_image="/b.qcow2"))),
         changed(BASE, disks=(SYS, replace(DATA, base_image="/b.qcow2"))),
         changed(BASE, disks=(SYS, replace(DATA, base_image="/b.qcow2", cache=CacheMode.UNSAFE))), None),
    Rule("nic-add-remove", BASE, changed(BASE, nics=(N0, N1)),
         changed(BASE, nics=(N0, replace(N1, mac="52:54:00:00:00:03"))),
         devplug.DeviceChange(remove_nics=(N1,), add_nics=(replace(N1, mac="52:54:00:00:00:03"),))),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_device_change_rules(rule: Rule) -> None:
    assert devplug.device_change(rule.boot, rule.old, rule.new) == rule.want


def test_free_slot_and_our_devices_from_qemus_answers() -> None:
    pci = [{"bus": 0, "devices": [{"slot": 0, "qdev_id": ""}, {"slot": 1, "qdev_id": ""},
                                  {"slot": 2, "qdev_id": "nic0"}, {"slot": 4, "qdev_id": "hdabc"}]}]
    assert devplug.pci_slots(pci) == {"nic0": 2, "hdabc": 4}
    assert devplug.free_slot(pci) == 3
    assert devplug.free_slot(pci, {3}) == 5
    full = [{"bus": 0, "devices": [{"slot": s, "qdev_id": ""} for s in range(32)]}]
    assert devplug.free_slot(full) is None
    block = [{"device": "", "qdev": "hdabc", "inserted": {"node-name": "hdabc-format"}},
             {"device": "", "qdev": "disk0"}]
    named = [{"node-name": "hdabc-format"}, {"node-name": "hdabc-file"}, {"node-name": "hdxyz-format"},
             {"node-name": "disk0-format"}]
    assert devplug.attached_nodes(block) == {"hdabc-format"}
    assert devplug.our_nodes(named) == {"hdabc-format", "hdxyz-format"}
    network = ("nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01\r\n"
               " \\ net0: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
               "nh525400000002: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:02\r\n"
               " \\ nh525400000002-net: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
               "nh525400000003-net: index=0,type=user,net=10.0.2.0,restrict=off\r\n")
    assert devplug.our_netdevs(network) == {"nh525400000002-net", "nh525400000003-net"}
    assert devplug.disk_id("/d/data.img") == "hd8e30636b51fc"  # "hd" + 12 hex of the path's sha256
    assert devplug.nic_id("52:54:00:AA:00:01") == "nh525400aa0001"


def test_tap_indexes_of_nics_added_live() -> None:
    boot = changed(BASE, nics=(N0,))  # its tap (if any) is index 0
    known = (devplug.PluggedNic("nhb", 3, 2, N1),)
    assert devplug.tap_indexes(boot, known, ["nha", "nhb", "nhc"]) == {"nha": 1, "nhb": 2, "nhc": 3}
    assert devplug.tap_indexes(boot, (), ["nha", "nhc"]) == {"nha": 1, "nhc": 2}
