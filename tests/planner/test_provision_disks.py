"""Disks the reconciler creates (issue 14), the pure parts: manifest fields and their one-line problems,
the plan's CREATE lines and errors from the nodes' answers, DELETE candidates, and both renderings."""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import model
from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.model import DeletePolicy, Disk, DiskFormat, FieldRef, Kind, SourceRef
from reconciler.pathinfo import MISSING, PathInfo, PathKind
from reconciler.planner import disks, make_plan
from reconciler.planner.actions import Action, ActionKind, DiskChange, DiskOp, Plan, Reason
from reconciler.planner.needs import Requirements
from reconciler.provision.imagecheck import ImageCheck, ImageQuery
from reconciler.render.json import plan_from_dict, plan_to_dict
from reconciler.render.text import render_text
from tests.manifest.helpers import NODE_A, instance, problem_lines, write_tree

MiB = 1024 * 1024


def _disks(yaml: str) -> str:
    return instance(extra="  disks:\n" + yaml)


BUILD_CASES = [
    pytest.param("    - {path: /srv/a.qcow2, baseImage: /srv/base.raw}\n",
                 [Disk("/srv/a.qcow2", DiskFormat.QCOW2, boot=True, base_image="/srv/base.raw")], id="overlay_defaults_to_qcow2"),
    pytest.param("    - {path: /srv/a.raw, size: 64M, deletePolicy: Delete}\n",
                 [Disk("/srv/a.raw", boot=True, size=64 * MiB, delete_policy=DeletePolicy.DELETE)], id="blank"),
    pytest.param("    - {path: /srv/a.qcow2, baseImage: /srv/b.qcow2, size: 1G}\n",
                 [Disk("/srv/a.qcow2", DiskFormat.QCOW2, boot=True, size=1 << 30, base_image="/srv/b.qcow2")], id="overlay_sized"),
]


@pytest.mark.parametrize(("yaml", "want"), BUILD_CASES)
def test_disk_fields_build(tmp_path: Path, yaml: str, want: list[Disk]) -> None:
    from reconciler import manifest

    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/x.yaml": _disks(yaml)})
    result = manifest.load([str(tmp_path / "m")])
    assert result.desired is not None, result.problems
    assert list(result.desired.instances["web1"].disks) == want


BAD_CASES = [
    pytest.param("    - {path: /srv/a.raw, size: 0}\n", ["m/x.yaml:12:26: instance web1: spec.disks[0].size: 0 is below the minimum of 1"], id="size_zero_int"),
    pytest.param("    - {path: /srv/a.raw, size: 0M}\n", ["m/x.yaml:12:26: instance web1: spec.disks[0].size: '0M' is not a size above zero"], id="size_zero"),
    pytest.param("    - {path: /srv/a.raw, size: 1000}\n", ["m/x.yaml:12:26: instance web1: spec.disks[0].size: 1000 is not a whole number of 512-byte sectors"], id="size_sectors"),
    pytest.param("    - {path: /srv/a.raw, size: 12X}\n", ["m/x.yaml:12:26: instance web1: spec.disks[0].size: '12X' is not a size like 512M or 2G"], id="size_bad"),
    pytest.param("    - {path: /srv/a.raw, baseImage: /srv/b.raw, format: raw}\n", ["m/x.yaml:12:49: instance web1: spec.disks[0].format: a disk made from a baseImage is a qcow2 overlay; format must be qcow2"], id="overlay_raw"),
    pytest.param("    - {path: /srv/a.qcow2, baseImage: b.qcow2}\n", ["m/x.yaml:12:28: instance web1: spec.disks[0].baseImage: baseImage 'b.qcow2' must be an absolute path"], id="base_relative"),
    pytest.param("    - {path: /srv/a.qcow2, baseImage: /srv/a.qcow2}\n", ["m/x.yaml:12:28: instance web1: spec.disks[0].baseImage: the base image cannot be the disk itself"], id="base_is_itself"),
    pytest.param("    - {path: /dev/vg0/lv, size: 1G}\n", ["m/x.yaml:12:8: instance web1: spec.disks[0].path: disk path '/dev/vg0/lv' is a device; only image files can be created (size, baseImage)"], id="device"),
    pytest.param("    - {path: /srv/a.raw, deletePolicy: Delete}\n", ["m/x.yaml:12:26: instance web1: spec.disks[0].deletePolicy: deletePolicy applies to disks the reconciler creates (size or baseImage)"], id="delete_unowned"),
    pytest.param("    - {path: /srv/a.raw, deletePolicy: Sometimes}\n", ["m/x.yaml:12:26: instance web1: spec.disks[0].deletePolicy: 'Sometimes' is not one of Retain, Delete"], id="delete_enum"),
    pytest.param("    - {path: /srv/w.raw}\n    - {path: /srv/o.qcow2, baseImage: /srv/w.raw}\n", ["m/x.yaml:13:28: instance web1: spec.disks[1].baseImage: base image '/srv/w.raw' is a writable disk of this instance; a base must not be written (declare it readOnly there)"], id="base_written"),
]


@pytest.mark.parametrize(("yaml", "want"), BAD_CASES)
def test_bad_disk_fields_are_one_line_each(tmp_path: Path, yaml: str, want: list[str]) -> None:
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/x.yaml": _disks(yaml)})
    assert [line.replace(str(tmp_path) + "/", "") for line in problem_lines([str(tmp_path / "m")])] == want


# --- the plan's creations --------------------------------------------------------------------------

NODE = model.NodeSpec("node-a", "/var/lib/r/a")
OVERLAY = Disk("/srv/web1.qcow2", DiskFormat.QCOW2, boot=True, base_image="/srv/base.qcow2")
BLANK = Disk("/srv/web1-data.raw", size=64 * MiB)
PRESENT = Disk("/srv/web1-old.raw", size=64 * MiB)
SPEC = model.InstanceSpec("web1", 128, disks=(OVERLAY, BLANK, PRESENT), node="node-a")
ANSWERS = {"node-a": {OVERLAY.path: MISSING, BLANK.path: MISSING, PRESENT.path: PathInfo(PathKind.FILE)}}


def test_only_missing_provisioned_disks_of_starts_are_created_and_asked_about() -> None:
    reqs = Requirements(((SPEC, NODE),))
    made = disks.to_create(reqs, ANSWERS)
    assert [(c.index, c.disk.path) for c in made] == [(0, OVERLAY.path), (1, BLANK.path)]
    assert disks.queries(made) == {"node-a": [ImageQuery(OVERLAY.path, OVERLAY.base_image, None),
                                              ImageQuery(BLANK.path, None, 64 * MiB)]}
    migrating = Requirements(((SPEC, NODE),), incoming=frozenset({("web1", "node-a")}))
    assert disks.to_create(migrating, ANSWERS) == ()  # a migration target never creates a disk


def _checks(free: int, error: str = "", base_size: int = 2 << 30) -> dict[str, dict[str, ImageCheck]]:
    return {"node-a": {OVERLAY.path: ImageCheck(OVERLAY.path, error, "qcow2", base_size, 7, free),
                       BLANK.path: ImageCheck(BLANK.path, device=7, free=free)}}


def test_creations_become_plan_lines_with_size_and_base() -> None:
    made = disks.to_create(Requirements(((SPEC, NODE),)), ANSWERS)
    lines, problems = disks.changes(made, _checks(free=1 << 40))
    assert problems == ()
    assert lines == (
        DiskChange("web1", "node-a", OVERLAY.path, DiskOp.CREATE, 2 << 30, "/srv/base.qcow2", "qcow2", "qcow2"),
        DiskChange("web1", "node-a", BLANK.path, DiskOp.CREATE, 64 * MiB, None, None, "raw"),
    )


def test_failures_are_errors_naming_field_and_file() -> None:
    made = disks.to_create(Requirements(((SPEC, NODE),)), ANSWERS)
    where = {FieldRef(Kind.INSTANCE, "web1", ("spec", "disks", 0, "baseImage")): SourceRef("m/web1.yaml", 12, 7)}
    bad = "base image: disk image /srv/base.qcow2: Could not open '/srv/base.qcow2': No such file or directory"
    lines, problems = disks.changes(made, _checks(free=1 << 40, error=bad), where)
    assert [p.message for p in problems] == [f"m/web1.yaml:12:7: instance web1: spec.disks[0].baseImage: {bad}"]
    assert lines == ()  # nothing of a failing instance is listed as created
    _, tight = disks.changes(made, _checks(free=100 * MiB, base_size=64 * MiB))
    assert [p.message for p in tight] == [
        "instance web1: spec.disks[0].baseImage: disk image /srv/web1.qcow2: needs 64 MiB (2 disks created there need 128 MiB), but its filesystem has 100 MiB free",
        "instance web1: spec.disks[1].size: disk image /srv/web1-data.raw: needs 64 MiB (2 disks created there need 128 MiB), but its filesystem has 100 MiB free",
    ]
    small = model.InstanceSpec("web1", 128, disks=(Disk(OVERLAY.path, DiskFormat.QCOW2, size=MiB, base_image="/srv/base.qcow2"),))
    made = disks.to_create(Requirements(((small, NODE),)), {"node-a": {OVERLAY.path: MISSING}})
    _, shrink = disks.changes(made, _checks(free=1 << 40))
    assert [p.detail for p in shrink] == [
        "spec.disks[0].baseImage: disk image /srv/web1.qcow2: size 1 MiB is below the base image's virtual size (2 GiB); an overlay cannot shrink its base"]


# --- deletions -------------------------------------------------------------------------------------

DOOMED = Disk("/srv/p1.raw", size=MiB, delete_policy=DeletePolicy.DELETE)
KEPT = Disk("/srv/p1-keep.raw", size=MiB)


def _rec(spec: model.InstanceSpec, state: RunState = RunState.RUNNING) -> ActualInstance:
    return ActualInstance(name=spec.name, node="node-a", state=state, spec=spec)


def test_deletion_candidates_of_pruned_and_removed_entries() -> None:
    recorded = model.InstanceSpec("p1", 128, disks=(DOOMED, KEPT), node="node-a")
    pruned = Plan(actions=(Action("p1", ActionKind.STOP, Reason.PRUNED, "node-a"),), prune=True)
    desired = model.DesiredState({}, {"node-a": NODE})
    actual = ActualState((_rec(recorded),))
    assert disks.deletion_candidates(pruned, desired, actual) == (
        (DiskChange("p1", "node-a", DOOMED.path, DiskOp.DELETE, reason="instance pruned"),), ())
    assert disks.deletion_candidates(Plan(prune=False), desired, actual) == ((), ())  # not pruned
    assert disks.deletion_candidates(Plan(prune=True), desired, actual) == ((), ())  # left running
    protected = model.InstanceSpec("p1", 128, disks=(DOOMED,), protect=True)
    assert disks.deletion_candidates(pruned, desired, ActualState((_rec(protected),))) == ((), ())

    without = model.DesiredState({"p1": model.InstanceSpec("p1", 128, disks=(KEPT,), node="node-a")}, {"node-a": NODE})
    restart = Plan(actions=(Action("p1", ActionKind.RESTART, Reason.SPEC_CHANGED, "node-a"),))
    removed = DiskChange("p1", "node-a", DOOMED.path, DiskOp.DELETE, reason="disk entry removed")
    assert disks.deletion_candidates(restart, without, actual) == ((removed,), ())
    assert disks.deletion_candidates(Plan(), without, actual) == ((), ())  # still in use: no restart
    stopped = ActualState((_rec(recorded, RunState.STOPPED),))
    assert disks.deletion_candidates(Plan(), without, stopped) == ((removed,), ())
    guarded = model.DesiredState({"p1": model.InstanceSpec("p1", 128, disks=(KEPT,), protect=True)}, {"node-a": NODE})
    _, errors = disks.deletion_candidates(restart, guarded, actual)
    assert [e.message for e in errors] == [
        "instance p1: protect: true; deletePolicy Delete would delete disk image /srv/p1.raw (its entry was removed)"]
    assert disks.owned_deletions((removed,), {"node-a": {DOOMED.path}}) == (removed,)
    assert disks.owned_deletions((removed,), {"node-a": set()}) == ()


def test_a_disk_unplugged_by_a_live_update_is_deleted_after_it() -> None:
    """Added live, then its entry removed: the live update unplugs it, so its image may go (after the
    update succeeded: deletions run last and are skipped for an instance whose action failed)."""
    boot = model.InstanceSpec("p1", 128, disks=(KEPT,), node="node-a")
    running = replace(boot, disks=(KEPT, DOOMED))
    actual = ActualState((replace(_rec(running), boot_spec=boot),))
    desired = model.DesiredState({"p1": boot}, {"node-a": NODE})
    plan = make_plan(desired, actual)
    assert [(a.kind, a.reason) for a in plan.actions] == [(ActionKind.UPDATE, Reason.LIVE_UPDATE)]
    removed = DiskChange("p1", "node-a", DOOMED.path, DiskOp.DELETE, reason="disk entry removed")
    assert disks.deletion_candidates(plan, desired, actual) == ((removed,), ())
    # At boot it was there: not unplugged live (a restart, here held pending), so it stays.
    pending = model.DesiredState({"p1": replace(boot, update_policy=model.UpdatePolicy.PENDING, protect=True)},
                                 {"node-a": NODE})
    held = ActualState((_rec(replace(running, update_policy=model.UpdatePolicy.PENDING)),))
    plan = make_plan(pending, held)
    assert [(a.kind, a.reason) for a in plan.actions] == [(ActionKind.UPDATE, Reason.RECORD_ONLY)]
    assert disks.deletion_candidates(plan, pending, held) == ((), ())


# --- rendering -------------------------------------------------------------------------------------

RENDERED = Plan(
    actions=(Action("web1", ActionKind.START, Reason.NEW, "node-a", memory_mib=128),),
    disks=(
        DiskChange("web1", "node-a", OVERLAY.path, DiskOp.CREATE, 2 << 30, "/srv/base.qcow2", "qcow2", "qcow2"),
        DiskChange("web1", "node-a", BLANK.path, DiskOp.CREATE, 64 * MiB, None, None, "raw"),
        DiskChange("old1", "node-a", "/srv/old1.qcow2", DiskOp.DELETE, reason="instance pruned"),
    ),
)


def test_text_shows_each_disk_as_one_line_and_counts_them() -> None:
    text = render_text(RENDERED)
    assert """Disk images:

  + create /srv/web1.qcow2 on node-a for web1: qcow2 overlay on /srv/base.qcow2 (qcow2; never written), 2 GiB
  + create /srv/web1-data.raw on node-a for web1: blank raw, 64 MiB
  - delete /srv/old1.qcow2 on node-a (of old1: created by the reconciler, deletePolicy Delete; instance pruned)
""" in text
    assert text.endswith("Plan: 1 to start, 0 to restart, 0 to migrate, 0 to stop, 2 disk images to create, 1 disk image to delete.\n")


def test_json_carries_the_disks_and_reads_back() -> None:
    data = plan_to_dict(RENDERED)
    assert data["disks"][1] == {"instance": "web1", "node": "node-a", "path": BLANK.path, "op": "create",
                                "size": 64 * MiB, "base": None, "base_format": None, "format": "raw", "reason": None}
    assert plan_from_dict(json.loads(json.dumps(data))) == RENDERED
    assert "disks" not in plan_to_dict(Plan())  # absent when there are none (older readers, goldens)


# --- cloud-init ------------------------------------------------------------------------------------

SECRET = "#cloud-config\npassword: hunter2\n"


def test_a_seed_change_is_shown_by_digest_and_forces_a_restart() -> None:
    from reconciler.planner.diff import diff_specs
    from reconciler.provision.seed import SeedSpec, build_seed

    old = model.InstanceSpec("web1", 128, cloud_init=model.CloudInit(user_data=SECRET))
    new = model.InstanceSpec("web1", 128, cloud_init=model.CloudInit(user_data=SECRET + "x: 1\n"))
    a, b = build_seed("web1", SeedSpec(SECRET)), build_seed("web1", SeedSpec(SECRET + "x: 1\n"))
    (change,) = diff_specs(old, new)
    assert change.path == "cloud_init" and change.forces_restart
    assert json.loads(change.old) == f"seed sha256:{a.digest[:12]} (instance-id {a.instance_id})"
    assert json.loads(change.new) == f"seed sha256:{b.digest[:12]} (instance-id {b.instance_id})"
    assert "hunter2" not in change.old + change.new
    (added,) = diff_specs(model.InstanceSpec("web1", 128), new)
    assert added.old == "null"


def test_the_seed_is_a_read_only_cdrom_and_the_launch_carries_its_parts() -> None:
    from reconciler.argv import build_launch
    from reconciler.provision.seed import SeedSpec

    spec = model.InstanceSpec("web1", 128, cloud_init=model.CloudInit(user_data=SECRET, network_config="v: 2\n"))
    launch = build_launch(spec, NODE)
    argv = list(launch.argv)
    i = argv.index("driver=file,node-name=seed0-file,filename=/var/lib/r/a/instances/web1/seed.iso,read-only=on")
    assert argv[i - 1:i + 5] == [
        "-blockdev", argv[i], "-blockdev", "driver=raw,node-name=seed0-format,file=seed0-file,read-only=on",
        "-device", "ide-cd,id=seed0,drive=seed0-format"]
    assert launch.seed == SeedSpec(SECRET, None, "v: 2\n")
    assert not any("hunter2" in a for a in argv)
    assert build_launch(model.InstanceSpec("web1", 128), NODE).seed is None


SEED_CASES = [
    pytest.param("  cloudInit: {userData: x, userDataFile: u.yaml}\n", ["m/x.yaml:11:28: instance web1: spec.cloudInit.userDataFile: give userData or userDataFile, not both"], id="both"),
    pytest.param("  cloudInit: {metaDataFile: ../m}\n", ["m/x.yaml:11:15: instance web1: spec.cloudInit.metaDataFile: metaDataFile '../m' must stay inside the manifest's directory (a relative path, without ..)"], id="dotdot"),
    pytest.param("  cloudInit: {networkConfigFile: /etc/n}\n", ["m/x.yaml:11:15: instance web1: spec.cloudInit.networkConfigFile: networkConfigFile '/etc/n' must stay inside the manifest's directory (a relative path, without ..)"], id="absolute"),
    pytest.param("  cloudInit: {userDataFile: missing.ud}\n", ["m/x.yaml:11:15: instance web1: spec.cloudInit.userDataFile: userDataFile 'missing.ud' does not exist (m/missing.ud)"], id="missing"),
]


@pytest.mark.parametrize(("extra", "want"), SEED_CASES)
def test_bad_seed_fields_are_one_line_each(tmp_path: Path, extra: str, want: list[str]) -> None:
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/x.yaml": instance(extra=extra)})
    got = [line.replace(str(tmp_path) + "/", "") for line in problem_lines([str(tmp_path / "m")])]
    assert got == want


def test_seed_files_are_read_into_the_spec(tmp_path: Path) -> None:
    from reconciler import manifest

    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/x.yaml": instance(extra="  cloudInit: {userDataFile: s/ud}\n"),
                          "m/s/ud": SECRET})
    desired = manifest.load([str(tmp_path / "m")]).desired
    assert desired is not None
    assert desired.instances["web1"].cloud_init == model.CloudInit(user_data=SECRET, user_data_file="s/ud")


# --- firmware --------------------------------------------------------------------------------------


def test_uefi_maps_ovmf_read_only_and_the_instances_own_nvram() -> None:
    from reconciler.argv import build_launch

    spec = model.InstanceSpec("web1", 256, firmware=model.Firmware.UEFI)
    launch = build_launch(spec, NODE)
    argv = list(launch.argv)
    assert argv[argv.index("-machine") + 1] == "pc,accel=kvm,pflash0=fw-code,pflash1=fw-vars"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"][:4] == [
        "driver=file,node-name=fw-code-file,filename=/usr/share/OVMF/OVMF_CODE_4M.fd,read-only=on",
        "driver=raw,node-name=fw-code,file=fw-code-file,read-only=on",
        "driver=file,node-name=fw-vars-file,filename=/var/lib/r/a/instances/web1/nvram.fd",
        "driver=raw,node-name=fw-vars,file=fw-vars-file"]
    assert launch.nvram_template == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    secure = build_launch(model.InstanceSpec("web1", 256, machine="q35", firmware=model.Firmware.UEFI,
                                             secure_boot=True), NODE)
    assert "q35,accel=kvm,pflash0=fw-code,pflash1=fw-vars,smm=on" in secure.argv
    assert "driver=cfi.pflash01,property=secure,value=on" in secure.argv
    assert secure.nvram_template == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    plain = build_launch(model.InstanceSpec("web1", 256), NODE)
    assert plain.nvram_template is None and not any("pflash" in a for a in plain.argv)


OVMF_MISSING_CASES = [
    pytest.param({}, ("OVMF",), ["instance web1: spec.firmware: '/usr/share/OVMF/OVMF_CODE_4M.fd' does not "
                                 "exist on node node-a"], id="uefi_no_ovmf"),
    # A node with the plain build only (no secure-boot files): only secureBoot is refused, naming its file.
    pytest.param({"machine": "q35", "secure_boot": True}, ("secboot", ".ms."),
                 ["instance web1: spec.secureBoot: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd' does not exist "
                  "on node node-a"], id="secure_boot_no_secboot_build"),
    pytest.param({}, ("secboot", ".ms."), [], id="uefi_plain_build_is_enough"),
]


@pytest.mark.parametrize(("extra", "missing", "want"), OVMF_MISSING_CASES)
def test_uefi_on_a_node_without_ovmf_is_a_plan_error(extra: dict[str, object], missing: tuple[str, ...],
                                                     want: list[str]) -> None:
    from reconciler.planner import needs

    spec = model.InstanceSpec("web1", 256, node="node-a", firmware=model.Firmware.UEFI,
                              **extra)  # type: ignore[arg-type]
    desired = model.DesiredState({"web1": spec}, {"node-a": NODE})
    plan = Plan(actions=(Action("web1", ActionKind.START, Reason.NEW, "node-a"),))
    reqs = needs.requirements(plan, desired, ActualState(()))
    present = PathInfo(PathKind.FILE, executable=True)
    answers = {"node-a": {q: MISSING if any(m in q for m in missing) else present
                          for q in reqs.queries()["node-a"]}}
    assert [p.message for p in needs.problems(needs.missing(reqs, answers), {})] == want


FIRMWARE_CASES = [
    pytest.param("  secureBoot: true\n", ["m/x.yaml:11:3: instance web1: spec.secureBoot: secure boot needs SMM: use machine q35", "m/x.yaml:11:3: instance web1: spec.secureBoot: secure boot needs firmware uefi"], id="secure_bios"),
    pytest.param("  firmware: efi\n", ["m/x.yaml:11:3: instance web1: spec.firmware: 'efi' is not one of bios, uefi"], id="bad_enum"),
]


@pytest.mark.parametrize(("extra", "want"), FIRMWARE_CASES)
def test_bad_firmware_fields(tmp_path: Path, extra: str, want: list[str]) -> None:
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/x.yaml": instance(extra=extra)})
    assert [line.replace(str(tmp_path) + "/", "") for line in problem_lines([str(tmp_path / "m")])] == want


# --- growing -------------------------------------------------------------------------------------


def test_only_a_grown_size_is_an_in_place_update() -> None:
    from dataclasses import replace

    from reconciler.planner.diff import diff_specs
    from reconciler.planner.policy import grown_disks, record_spec

    old = model.InstanceSpec("web1", 128, disks=(BLANK, KEPT))
    grown = replace(old, disks=(replace(BLANK, size=96 * MiB), KEPT))
    assert diff_specs(old, grown)[0].forces_restart is False
    assert record_spec(old, grown, "node-a").disks == grown.disks
    assert grown_disks(old.disks, grown.disks) == ((0, grown.disks[0]),)
    for forcing in (replace(old, disks=(replace(BLANK, size=32 * MiB), KEPT)),  # a shrink
                    replace(old, disks=(replace(BLANK, size=96 * MiB), replace(KEPT, cache=model.CacheMode.WRITETHROUGH))),
                    replace(old, disks=(replace(BLANK, size=96 * MiB, bus=model.DiskBus.SCSI), KEPT))):
        assert any(c.forces_restart for c in diff_specs(old, forcing))
        assert record_spec(old, forcing, "node-a").disks == old.disks
    shrunk = replace(old, disks=(replace(BLANK, size=32 * MiB), KEPT))
    problems = disks.shrinks(model.DesiredState({"web1": shrunk}, {}), ActualState((_rec(old),)))
    assert [p.message for p in problems] == [
        "instance web1: spec.disks[0].size: 64 MiB -> 32 MiB: a disk is never shrunk (the data past the new end would be lost)"]


def test_the_agents_interfaces_leave_loopback_out() -> None:
    from reconciler.agentinfo import AgentInfo, GuestInterface, interfaces_of

    answer = [{"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
              {"name": "eth0", "hardware-address": "52:54:00:00:00:01",
               "ip-addresses": [{"ip-address": "10.0.2.15", "ip-address-type": "ipv4", "prefix": 24}]},
              {"name": "eth1", "hardware-address": "52:54:00:00:00:02"}]
    found = interfaces_of(answer)
    assert found == (GuestInterface("eth0", "52:54:00:00:00:01", ("10.0.2.15/24",)),
                     GuestInterface("eth1", "52:54:00:00:00:02", ()))
    assert AgentInfo(True, found).words == "agent: 10.0.2.15/24"
    assert AgentInfo(True, ()).words == "agent: answers (no address)"
    assert AgentInfo(False, detail="x").words == "agent: no answer"
    assert interfaces_of({"error": 1}) == ()


def test_a_changed_delete_policy_needs_no_restart() -> None:
    from dataclasses import replace

    from reconciler.planner.diff import diff_specs
    from reconciler.planner.policy import record_spec

    old = model.InstanceSpec("web1", 128, disks=(BLANK,))
    new = replace(old, disks=(replace(BLANK, delete_policy=DeletePolicy.DELETE),))
    (change,) = diff_specs(old, new)
    assert (change.path, change.forces_restart) == ("disks[0].delete_policy", False)
    assert record_spec(old, new, "node-a") == new
    both = replace(old, disks=(replace(BLANK, size=96 * MiB, delete_policy=DeletePolicy.DELETE),))
    from reconciler.planner.policy import grown_disks

    assert grown_disks(old.disks, both.disks) == ((0, both.disks[0]),)  # grown while the policy changed


def test_the_watch_daemon_holds_back_a_base_that_another_instance_writes(tmp_path: Path) -> None:
    from reconciler import manifest
    from reconciler.watch.assembly import Assembly

    writer = instance(extra="  disks:\n    - {path: /srv/w.raw}\n")
    reader = instance(name="web2", mac="52:54:00:00:00:02",
                      extra="  disks:\n    - {path: /srv/o.qcow2, baseImage: /srv/w.raw}\n")
    write_tree(tmp_path, {"node.yaml": NODE_A, "a.yaml": writer, "b.yaml": reader})
    parsed = manifest.parse_paths(sorted(str(p) for p in tmp_path.iterdir()))
    assembly = Assembly()
    assembly.update({f.path: f for f in parsed})
    assert assembly.desired() is None
    assert [p.message for p in manifest.assemble(parsed).problems] == [
        "base image '/srv/w.raw' is a writable disk of instance web1; a base must not be written (declare it "
        "readOnly there)"]
    write_tree(tmp_path, {"a.yaml": writer.replace("{path: /srv/w.raw}", "{path: /srv/w.raw, readOnly: true}")})
    parsed = manifest.parse_paths(sorted(str(p) for p in tmp_path.iterdir()))
    assembly.update({f.path: f for f in parsed})
    assert assembly.desired() is not None
