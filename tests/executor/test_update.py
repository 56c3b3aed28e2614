"""The record update (ActionKind.UPDATE) against a real state directory, no QEMU: what it writes, that
the intent comes first and goes last, that a run killed between them leaves a state discovery cleans,
and that a stop keeping its record takes the fields that need no restart. Also the summary line."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import discovery, statedir
from reconciler import intent as intents
from reconciler.actual import RunState, StopCause
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionResult, Status, Summary
from reconciler.executor.progress import RecordingProgress
from reconciler.executor.stop import finish
from reconciler.executor.update import update_record
from reconciler.model import InstanceSpec, NodeSpec, RunStrategy, spec_hash
from reconciler.node import LocalNode
from reconciler.planner.actions import Action, ActionKind, Reason
from reconciler.records import AppliedRecord

RUNNING = InstanceSpec("web", 256, node="a")
ARGV = ("qemu-system-x86_64", "-name", "web")


class SpyNode(LocalNode):
    """A LocalNode that logs its state-directory writes, in order."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.log: list[str] = []

    async def write_intent(self, instance: str, data: object) -> None:
        assert isinstance(data, dict)
        self.log.append(f"intent {data['kind']}")
        await super().write_intent(instance, data)

    async def write_record(self, record: AppliedRecord) -> None:
        self.log.append("record")
        await super().write_record(record)

    async def remove_intent(self, instance: str) -> None:
        self.log.append("intent removed")
        await super().remove_intent(instance)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SpyNode]:
    yield SpyNode(NodeSpec("a", state_dir=str(tmp_path / "a")))


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _recorded(node: SpyNode, spec: InstanceSpec = RUNNING, cause: StopCause | None = None) -> AppliedRecord:
    rec = AppliedRecord.create(spec, "a", ARGV, "9.0", _dead_pid(), 1.0, 1.0, revision="old")
    if cause is not None:
        rec = rec.stopped(cause, 2.0)
    asyncio.run(node.write_record(rec))
    node.log.clear()
    return rec


def _ctx(node: SpyNode, desired: InstanceSpec) -> Context:
    return Context(nodes={"a": node}, specs={desired.name: desired}, progress=RecordingProgress(),
                   revision="new")


def _update(name: str = "web") -> Action:
    return Action(name, ActionKind.UPDATE, Reason.RECORD_ONLY, "a")


def test_update_rewrites_the_record_under_an_intent(node: SpyNode) -> None:
    before = _recorded(node)
    desired = InstanceSpec("web", 256, node="a", protect=True, labels=(("tier", "web"),),
                           shutdown_timeout=5.0)
    line = asyncio.run(update_record(_ctx(node, desired), _update()))
    assert line == "record updated on a (no restart needed)"
    assert node.log == ["intent update", "record", "intent removed"]
    after = asyncio.run(node.read_record("web"))
    assert after is not None
    assert after.spec == desired and after.spec_hash == spec_hash(desired) and after.revision == "new"
    assert (after.pid, after.argv, after.create_time, after.stop_cause) == (before.pid, ARGV, 1.0, None)
    assert asyncio.run(node.read_intent("web")) is None


def test_update_keeps_restart_fields_and_the_old_revision_while_changes_are_held(node: SpyNode) -> None:
    _recorded(node)
    desired = InstanceSpec("web", 1024, node="a", protect=True)  # memory is held back (Pending)
    asyncio.run(update_record(_ctx(node, desired), _update()))
    after = asyncio.run(node.read_record("web"))
    assert after is not None
    assert after.spec == InstanceSpec("web", 256, node="a", protect=True) and after.revision == "old"


def test_update_of_an_up_to_date_record_writes_nothing(node: SpyNode) -> None:
    _recorded(node)
    assert asyncio.run(update_record(_ctx(node, RUNNING), _update())) == "record on a already up to date"
    assert node.log == []


def test_update_killed_after_its_intent_leaves_the_old_record_and_discovery_drops_the_intent(
        node: SpyNode) -> None:
    before = _recorded(node, cause=StopCause.RECONCILER)
    dead = intents.Intent(kind=intents.IntentKind.UPDATE, instance="web", node="a", time=3.0,
                          owner_pid=_dead_pid(), owner_create_time=3.0)
    # as left by a run SIGKILLed before the record
    asyncio.run(node.write_intent("web", intents.to_jsonable(dead)))
    (found,) = discovery.discover([node.spec]).instances
    assert (found.state, found.spec) == (RunState.STOPPED, before.spec)
    assert asyncio.run(node.read_intent("web")) is None
    assert statedir.read_record(node.paths("web")) == before


def test_a_stop_keeping_its_record_takes_the_fields_that_need_no_restart(node: SpyNode) -> None:
    _recorded(node, InstanceSpec("web", 256, node="a", run_strategy=RunStrategy.RERUN_ON_FAILURE))
    halted = InstanceSpec("web", 256, node="a", run_strategy=RunStrategy.HALTED)
    asyncio.run(finish(node, "web", StopCause.GUEST, keep_record=True, desired=halted))
    after = asyncio.run(node.read_record("web"))
    assert after is not None
    assert after.spec == halted and after.spec_hash == spec_hash(halted)
    assert after.stop_cause is StopCause.GUEST


def test_summary_names_record_updates_only_when_there_are_some() -> None:
    done = ActionResult(_update(), Status.DONE)
    start = ActionResult(Action("x", ActionKind.START, Reason.NEW, "a"), Status.DONE)
    assert Summary((start,)).line() == "Apply complete: 1 started, 0 stopped, 0 restarted, 0 migrated."
    assert Summary((start, done)).line() == (
        "Apply complete: 1 started, 0 stopped, 0 restarted, 0 migrated, 1 record updated.")
