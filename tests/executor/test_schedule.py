"""The scheduler: phases in order, one instance's actions in order, failures isolated to their instance,
bounded parallelism; and the intent codec and summary line it relies on."""

from __future__ import annotations

import asyncio
import time

import pytest

from reconciler import intent as intents
from reconciler.executor import schedule
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionFailed, ActionResult, Status, Summary
from reconciler.executor.progress import RecordingProgress
from reconciler.model import InstanceSpec
from reconciler.planner.actions import Action, ActionKind, Plan, Reason


def act(name: str, kind: ActionKind = ActionKind.START, phase: int = 0, node: str = "a") -> Action:
    return Action(name, kind, Reason.NEW, node, phase=phase)


def run_with(plan: Plan, behaviour: dict[str, str], parallel: int = 4,
             monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[Summary, list[str], int]:
    log: list[str] = []
    running = 0
    peak = 0

    async def fake(ctx: Context, action: Action) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        log.append(f"begin {action.name} {action.kind.value}")
        await asyncio.sleep(0.01)
        running -= 1
        log.append(f"end {action.name} {action.kind.value}")
        if behaviour.get(action.name) == "fail":
            raise ActionFailed("boom")
        return "ok"

    assert monkeypatch is not None
    monkeypatch.setattr(schedule, "_dispatch", fake)
    ctx = Context(nodes={}, specs={}, progress=RecordingProgress(), owner=(1, 0.0))
    summary = asyncio.run(schedule.run_plan(plan, ctx, parallel))
    return summary, log, peak


def test_failure_skips_only_that_instances_later_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = Plan(actions=(act("x", ActionKind.STOP), act("y"), act("x", phase=1), act("z", phase=1)))
    summary, log, _ = run_with(plan, {"x": "fail"}, monkeypatch=monkeypatch)
    by = {(r.action.name, r.action.phase): r.status for r in summary.results}
    assert by == {("x", 0): Status.FAILED, ("y", 0): Status.DONE, ("x", 1): Status.SKIPPED,
                  ("z", 1): Status.DONE}
    assert not summary.ok
    assert summary.line() == "Apply finished with errors: 2 started, 0 stopped, 0 restarted, 0 migrated; " \
                             "1 failed, 1 skipped."
    # phase 1 began only after phase 0 ended
    assert log.index("begin z start") > max(log.index("end x stop"), log.index("end y start"))


def test_same_instance_in_order_and_parallel_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = Plan(actions=(act("d", ActionKind.STOP, node="b"), act("d", ActionKind.MIGRATE),
                         *(act(f"i{n}") for n in range(6))))
    summary, log, peak = run_with(plan, {}, parallel=2, monkeypatch=monkeypatch)
    assert summary.ok and peak == 2
    assert log.index("end d stop") < log.index("begin d migrate")


def test_noop_actions_are_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    summary, log, _ = run_with(Plan(actions=(act("n", ActionKind.NOOP),)), {}, monkeypatch=monkeypatch)
    assert summary.results == () and log == [] and summary.line().startswith("Apply complete")


def test_intent_round_trip_and_matching() -> None:
    spec = InstanceSpec(name="web1", memory_mib=128)
    it = intents.Intent(intents.IntentKind.MIGRATE_TARGET, "web1", "node-b", 1000.0, 77, 5.0,
                        argv=("qemu", "-pidfile", "/s/web1/qemu.pid"), spec=spec, peer_node="node-a",
                        revision="abc")
    assert intents.from_jsonable(intents.to_jsonable(it)) == it
    assert it.matches(it.argv, 999.5)  # within the clock slack
    assert not it.matches(it.argv, 998.0)  # started before the intent: some other process
    assert not it.matches(("qemu",), 1001.0)
    with pytest.raises(intents.IntentError, match="format_version"):
        intents.from_jsonable({"format_version": 9})
    with pytest.raises(intents.IntentError, match="missing field kind"):
        intents.from_jsonable({"format_version": 1})


def test_owner_alive() -> None:
    pid, ctime = intents.owner_identity()
    me = intents.Intent(intents.IntentKind.STOP, "x", "a", time.time(), pid, ctime)
    assert intents.owner_alive(me)
    assert not intents.owner_alive(intents.Intent(intents.IntentKind.STOP, "x", "a", 0.0, pid, ctime - 100))


def test_summary_counts() -> None:
    ok = ActionResult(act("a", ActionKind.MIGRATE), Status.DONE)
    assert Summary((ok,)).line() == "Apply complete: 0 started, 0 stopped, 0 restarted, 1 migrated."
