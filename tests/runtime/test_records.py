"""Unit: applied records survive a JSON round trip exactly, and bad records fail with the field named."""

from __future__ import annotations

import json
import re

import pytest

from reconciler import model, records
from reconciler.actual import StopCause

FULL_SPEC = model.InstanceSpec(
    name="web1", memory_mib=512, vcpus=2, node="n1", labels=(("tier", "web"),),
    run_strategy=model.RunStrategy.RERUN_ON_FAILURE, protect=True, update_policy=model.UpdatePolicy.PENDING,
    disks=(model.Disk("/var/lib/vm/web1.qcow2", model.DiskFormat.QCOW2, boot=True),
           model.Disk("/dev/vg/data", bus=model.DiskBus.SCSI, read_only=True, cache=model.CacheMode.UNSAFE)),
    kernel=model.KernelBoot("/boot/vmlinuz", "/dev/vda1", initrd="/boot/initrd", cmdline="quiet"),
    acpi=False, vnc=model.Vnc("0.0.0.0", 3),
    nics=(model.Nic("52:54:00:00:00:01", mode=model.NicMode.USER),
          model.Nic("52:54:00:00:00:02", model.NicModel.E1000, bridge="br0", ip="10.0.0.2", hook="/x")),
    cpu_model="qemu64", shutdown_timeout=12.5,
    migration=model.Migration(model.MigrationMode.OFFLINE, 100, 50, 10.0, 20.0, True, True),
    extra_args=("-S", "-rtc", "base=utc"),
)


def _record(spec: model.InstanceSpec = FULL_SPEC) -> records.AppliedRecord:
    return records.AppliedRecord.create(spec, "n1", ("qemu-system-x86_64", "-name", "guest=web1"), "7.2.22",
                                        4242, 1700000000.25, 1700000000.5, revision="abc123")


@pytest.mark.parametrize("spec", [FULL_SPEC, model.InstanceSpec(name="tiny", memory_mib=16)])
def test_spec_round_trip(spec: model.InstanceSpec) -> None:
    back = records.instance_from_jsonable(json.loads(json.dumps(model.to_jsonable(spec))))
    assert back == spec
    assert model.spec_hash(back) == model.spec_hash(spec)


def test_record_round_trip_and_stop_cause() -> None:
    rec = _record()
    assert records.from_json(records.to_json(rec)) == rec
    stopped = rec.stopped(StopCause.GUEST, 1700000100.0)
    back = records.from_json(records.to_json(stopped))
    assert back == stopped
    assert back.stop_cause is StopCause.GUEST
    data = json.loads(records.to_json(rec))
    assert data["managed_by"] == "reconciler"
    assert data["format_version"] == records.FORMAT_VERSION
    assert data["spec_hash"] == model.spec_hash(FULL_SPEC)


def test_missing_spec_fields_take_defaults() -> None:
    assert records.instance_from_jsonable({"name": "a", "memory_mib": 64}) == model.InstanceSpec("a", 64)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(format_version=99), "unsupported format_version 99"),
        (lambda d: d.pop("pid"), "missing field pid"),
        (lambda d: d.update(pid="12"), "pid: unexpected value '12'"),
        (lambda d: d.update(argv="qemu -m 1"), "argv: expected a list of strings"),
        (lambda d: d["spec"].update(vcpus="two"), "spec.vcpus: expected int, got 'two'"),
        (lambda d: d["spec"].update(run_strategy="Never"), "spec.run_strategy: 'Never' is not a valid"),
        (lambda d: d["spec"].update(colour="red"), "spec: unknown field 'colour'"),
        (lambda d: d["spec"]["disks"][0].pop("path"), "spec.disks[0]: missing field 'path'"),
        (lambda d: d["spec"].update(labels=[["a"]]), "spec.labels[0]: expected 2 items, got 1"),
        (lambda d: d.update(stop_cause="bored"), "'bored' is not a valid StopCause"),
        (lambda d: d["spec"].update(shutdown_timeout=True),
         "spec.shutdown_timeout: expected float, got True"),
        (lambda d: d["spec"].update(disks={"path": "/x"}), "spec.disks: expected a list, got {'path': '/x'}"),
        (lambda d: d["spec"].update(run_strategy=["Always"]),
         "spec.run_strategy: ['Always'] is not a valid RunStrategy"),
        (lambda d: d["spec"].update(kernel="/boot/vmlinuz"), "spec.kernel: expected an object, got"),
        (lambda d: d["spec"].update(node=7), "spec.node: expected str, got 7"),
    ],
)
def test_bad_records_name_the_field(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(records.to_json(_record()))
    mutate(data)
    with pytest.raises(records.DecodeError, match="^" + re.escape(expected)):
        records.from_json(json.dumps(data))


def test_not_json() -> None:
    with pytest.raises(records.DecodeError, match="not JSON"):
        records.from_json("{")
    with pytest.raises(records.DecodeError, match="not a JSON object"):
        records.from_json("[]")
