"""The escape hatch is visible: a plan that starts QEMU with qemuExtraArgs shows them, text and JSON.

A manifest can pass arbitrary QEMU arguments only through `qemuExtraArgs` (the schema has no other free-
form field that reaches the argv: see test_fuzz_argv), so a reviewer must see them in `reconciler plan`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.model import DesiredState, InstanceSpec, NodeSpec
from reconciler.planner import make_plan
from reconciler.render.json import plan_from_dict, plan_to_dict, render_json
from reconciler.render.text import render_text

EXTRA = ("-device", "virtio-rng-pci", "-smbios", "type=1,serial=a b\n\"c\"")
NODE = NodeSpec(name="n1", state_dir="/var/lib/reconciler/n1")


def _desired(spec: InstanceSpec) -> DesiredState:
    return DesiredState(instances={spec.name: spec}, nodes={"n1": NODE})


GOLDEN_START = """Reconciler will perform the following actions:

  + web on n1
      # declared in the manifests, not started yet
      # qemuExtraArgs (passed to QEMU unchecked): ["-device", "virtio-rng-pci", "-smbios", \
"type=1,serial=a b\\n\\"c\\""]

Plan: 1 to start, 0 to restart, 0 to migrate, 0 to stop.
"""


def test_start_shows_extra_args_text_and_json() -> None:
    plan = make_plan(_desired(InstanceSpec(name="web", memory_mib=64, node="n1", extra_args=EXTRA)),
                     ActualState())
    assert render_text(plan) == GOLDEN_START
    (action,) = json.loads(render_json(plan))["actions"]
    assert action["extra_args"] == list(EXTRA)
    assert plan_from_dict(plan_to_dict(plan)) == plan


def test_restart_for_changed_extra_args_shows_the_new_ones() -> None:
    old = InstanceSpec(name="web", memory_mib=64, node="n1", extra_args=("-S",))
    new = InstanceSpec(name="web", memory_mib=64, node="n1", extra_args=EXTRA)
    rec = ActualInstance(name="web", node="n1", state=RunState.RUNNING, spec=old, pid=1)
    plan = make_plan(_desired(new), ActualState((rec,)))
    text = render_text(plan)
    assert "-/+ web on n1" in text
    assert 'qemuExtraArgs (passed to QEMU unchecked): ["-device", "virtio-rng-pci"' in text
    assert 'extra_args: ["-S"] -> ["-device","virtio-rng-pci"' in text


def test_no_extra_args_no_line_and_no_key() -> None:
    plan = make_plan(_desired(InstanceSpec(name="web", memory_mib=64, node="n1")), ActualState())
    assert "qemuExtraArgs" not in render_text(plan)
    assert "extra_args" not in json.loads(render_json(plan))["actions"][0]


def test_reconciler_plan_command_shows_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\n"
        f"spec: {{stateDir: {tmp_path}/state, accelerator: tcg}}\n---\n"
        "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: web}\n"
        "spec: {memory: 64M, node: n1, qemuExtraArgs: ['-device', 'virtio-rng-pci']}\n")
    cli.main(["plan", "--no-color", str(tmp_path)])
    line = '# qemuExtraArgs (passed to QEMU unchecked): ["-device", "virtio-rng-pci"]'
    assert line in capsys.readouterr().out
    cli.main(["plan", "--json", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert out["actions"][0]["extra_args"] == ["-device", "virtio-rng-pci"]
