"""One reconcile pass with fakes for discovery and the executor: what is handed to the executor, what is
held back (crash-loop backoff, plan errors), pruning suspended while a file is broken, the node lock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.lock import NodeLock
from reconciler.model import DesiredState, InstanceSpec, NodeSpec
from reconciler.planner import Action, ActionKind, Plan, PlanProblem, ProblemKind, Reason
from reconciler.watch import cache as cache_mod
from reconciler.watch.backoff import BackoffPolicy, CrashLoops
from reconciler.watch.cache import ManifestCache
from reconciler.watch.reconcile import ActionOutcome, PassResult, Reconciler, drop_unappliable
from reconciler.watch.triggers import Trigger, TriggerSource

T = (Trigger(TriggerSource.RESYNC),)


def inst(name: str, memory: str = "64M", extra: str = "") -> str:
    return (f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
            f"spec: {{node: n1, memory: {memory}{extra}}}\n")


class Fakes:
    def __init__(self, actual: ActualState, fail: frozenset[str] = frozenset()) -> None:
        self.actual = actual
        self.fail = fail
        self.applied: list[tuple[Action, ...]] = []

    async def discover(self, nodes: Sequence[NodeSpec]) -> ActualState:
        return self.actual

    async def apply(self, plan: Plan, desired: DesiredState, revision: str | None) -> list[ActionOutcome]:
        self.applied.append(plan.actions)
        return [ActionOutcome(a, a.name not in self.fail, "boom" if a.name in self.fail else "ok")
                for a in plan.actions]

    async def revision(self) -> str | None:
        return "abc123"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cache_mod, "RACY_SECONDS", 0.0)
    d = tmp_path / "m"
    d.mkdir()
    (d / "node.yaml").write_text("apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\n"
                                 f"spec: {{stateDir: {tmp_path / 'st'}}}\n")
    (d / "defaults.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec: {prune: true}\n")
    (d / "a.yaml").write_text(inst("a"))
    (d / "b.yaml").write_text(inst("b"))
    return d


def make(tree: Path, fakes: Fakes, clock: list[float] | None = None, **kw: object) -> Reconciler:
    now = clock or [1000.0]
    return Reconciler(cache=ManifestCache([str(tree)]), apply_plan=fakes.apply, discover=fakes.discover,
                      revision=fakes.revision, loops=CrashLoops(BackoffPolicy(base=10.0, cap=60.0)),
                      clock=lambda: now[0], **kw)  # type: ignore[arg-type]


def spec(name: str, memory: int = 64) -> InstanceSpec:
    return InstanceSpec(name=name, memory_mib=memory, node="n1")


def running(name: str, memory: int = 64) -> ActualInstance:
    return ActualInstance(name, "n1", RunState.RUNNING, spec(name, memory), pid=100)


def crashed(name: str) -> ActualInstance:
    return ActualInstance(name, "n1", RunState.CRASHED, spec(name), stop_cause=StopCause.CRASH)


def run(r: Reconciler) -> PassResult:
    return asyncio.run(asyncio.wait_for(r.step(T), 30))


def test_steady_state_applies_nothing(tree: Path) -> None:
    fakes = Fakes(ActualState((running("a"), running("b"))))
    result = run(make(tree, fakes))
    assert fakes.applied == []
    assert result.ok and result.revision == "abc123"


def test_orphan_is_pruned_but_not_while_a_file_is_broken(tree: Path) -> None:
    fakes = Fakes(ActualState((running("a"), running("b"), running("old"))))
    r = make(tree, fakes)
    (tree / "a.yaml").write_text("kind: [")  # broken: pruning suspended
    result = run(r)
    assert fakes.applied == [] and result.snapshot.degraded
    (tree / "a.yaml").write_text(inst("a"))
    run(r)
    [(stop,)] = fakes.applied
    assert (stop.name, stop.kind, stop.reason) == ("old", ActionKind.STOP, Reason.PRUNED)


def test_crash_loop_holds_the_second_restart_until_the_backoff_ends(tree: Path) -> None:
    fakes = Fakes(ActualState((crashed("a"), running("b"))))
    clock = [1000.0]
    r = make(tree, fakes, clock)
    run(r)  # first restart: at once
    assert [a.name for a in fakes.applied[-1]] == ["a"]
    clock[0] = 1005.0  # crashed again 5 s later: held for base (10 s) after the first restart
    result = run(r)
    assert len(fakes.applied) == 1
    [hold] = result.held
    assert (hold.name, hold.restarts, hold.not_before) == ("a", 1, 1010.0)
    clock[0] = 1010.0
    run(r)
    assert [a.name for a in fakes.applied[-1]] == ["a"]
    assert r.loops.states["a"].restarts == 2


def test_a_spec_change_lifts_the_hold(tree: Path) -> None:
    fakes = Fakes(ActualState((crashed("a"), running("b"))))
    clock = [1000.0]
    r = make(tree, fakes, clock)
    run(r)
    (tree / "a.yaml").write_text(inst("a", "128M"))
    clock[0] = 1001.0
    run(r)
    assert len(fakes.applied) == 2 and fakes.applied[1][0].changes


def test_failed_start_is_backed_off(tree: Path) -> None:
    fakes = Fakes(ActualState((running("b"),)), fail=frozenset({"a"}))
    clock = [1000.0]
    r = make(tree, fakes, clock)
    result = run(r)
    assert not result.ok
    clock[0] = 1002.0
    assert run(r).held
    assert len(fakes.applied) == 1


def plan_with(errors: tuple[PlanProblem, ...]) -> Plan:
    acts = tuple(Action(n, ActionKind.START, Reason.NEW, "n1") for n in ("a", "b"))
    return Plan(actions=acts, errors=errors)


def test_instance_errors_drop_that_instance_only() -> None:
    keep, dropped, blocked = drop_unappliable(plan_with((
        PlanProblem(ProblemKind.SPLIT_BRAIN, "instance a", "running on several nodes"),)))
    assert ([a.name for a in keep], [a.name for a in dropped], blocked) == (["b"], ["a"], False)


def test_other_errors_block_everything() -> None:
    keep, dropped, blocked = drop_unappliable(plan_with((
        PlanProblem(ProblemKind.CAPACITY, "node n1", "too much memory"),)))
    assert (keep, len(dropped), blocked) == ([], 2, True)


def test_lock_held_by_someone_else_times_out_without_acting(tree: Path, tmp_path: Path) -> None:
    fakes = Fakes(ActualState((running("b"),)))
    waited: list[str] = []
    r = make(tree, fakes, lock_timeout=0.3, on_lock_wait=lambda path, holder: waited.append(path))
    (tmp_path / "st").mkdir()
    other = NodeLock(str(tmp_path / "st" / "node.lock"), "apply")  # another open file: a real conflict
    other.acquire(0)
    with other:
        result = run(r)
    assert waited == [str(tmp_path / "st" / "node.lock")]
    assert result.error is not None and "node lock" in result.error
    assert fakes.applied == []
    run(r)  # the lock is free again: the next pass acts
    assert [a.name for a in fakes.applied[0]] == ["a"]
