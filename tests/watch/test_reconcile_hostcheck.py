"""The daemon's pass runs the plan's host checks (reconciler.hostcheck) on the real file system: an
instance whose kernel is missing on its node is dropped from the pass with its error; the others go on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from reconciler import hostcheck
from reconciler.actual import ActualState
from reconciler.model import DesiredState, NodeSpec
from reconciler.planner import Action, Plan
from reconciler.watch import cache as cache_mod
from reconciler.watch.backoff import BackoffPolicy, CrashLoops
from reconciler.watch.cache import ManifestCache
from reconciler.watch.reconcile import ActionOutcome, Reconciler
from reconciler.watch.triggers import Trigger, TriggerSource


def _inst(name: str, kernel: Path) -> str:
    return (f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
            f"spec:\n  node: n1\n  memory: 64M\n  kernel: {{path: {kernel}, root: /dev/ram0}}\n")


def test_an_instance_missing_its_kernel_is_dropped_and_the_others_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "RACY_SECONDS", 0.0)
    tree = tmp_path / "m"
    tree.mkdir()
    (tree / "node.yaml").write_text("apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\n"
                                    f"spec: {{stateDir: {tmp_path / 'st'}}}\n")
    (tmp_path / "vmlinuz").write_text("kernel")
    (tree / "a.yaml").write_text(_inst("a", tmp_path / "vmlinuz"))
    (tree / "b.yaml").write_text(_inst("b", tmp_path / "gone"))
    applied: list[tuple[Action, ...]] = []

    async def discover(nodes: Sequence[NodeSpec]) -> ActualState:
        return ActualState()

    async def apply(plan: Plan, desired: DesiredState, revision: str | None) -> list[ActionOutcome]:
        applied.append(plan.actions)
        return [ActionOutcome(a, True) for a in plan.actions]

    async def revision() -> str | None:
        return None

    r = Reconciler(cache=ManifestCache([str(tree)]), apply_plan=apply, discover=discover, revision=revision,
                   loops=CrashLoops(BackoffPolicy()), check_hosts=hostcheck.check_local)
    result = asyncio.run(r.step((Trigger(TriggerSource.STARTUP),)))
    assert [[a.name for a in actions] for actions in applied] == [["a"]]
    assert [a.name for a in result.dropped] == ["b"] and not result.plan_blocked
    assert result.plan is not None
    assert [e.message for e in result.plan.errors] == [
        f"{tree}/b.yaml:7:12: instance b: spec.kernel.path: '{tmp_path / 'gone'}' does not exist on node n1"]
