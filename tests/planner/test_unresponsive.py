"""A process proved ours whose QMP does not answer: what the planner does with it (with and without
--force), how a saved plan names it, and how such a stop survives the JSON round trip."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from reconciler.actual import ActualInstance, RunState
from reconciler.model import InstanceSpec, RunStrategy
from reconciler.planfile import RecordPrint, SavedPlan, check_fresh, fingerprint, record_change
from reconciler.planner import Action, ActionKind, Plan, Reason, make_plan
from reconciler.render.json import plan_from_dict, plan_to_dict
from reconciler.render.text import render_text

from .factories import actual, changed, desired, rec, spec

WEB = spec("web", node="a")
HUNG = replace(rec(WEB, "a", RunState.UNKNOWN), pid=101, started_at=1700000000.25, qmp_unresponsive=True,
               detail="QMP did not answer in time")
UNREADABLE = replace(rec(None, "a", RunState.UNKNOWN, name="web"), pid=101)  # unreadable record: unverified
LEFT_OUT = "instance web on a: state unknown (QMP did not answer); left out of the plan"
WOULD = "instance web on a: QMP unresponsive; --force would stop it by signal (SIGTERM, then SIGKILL)"
STOP = Action("web", ActionKind.STOP, Reason.QMP_UNRESPONSIVE, "a", by_signal=True)


def halted(**kw: object) -> InstanceSpec:
    return changed(WEB, run_strategy=RunStrategy.HALTED, **kw)


@dataclass(frozen=True)
class Case:
    id: str
    spec: InstanceSpec
    record: ActualInstance
    force: bool
    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


CASES = [
    Case("halted-forced-stops-by-signal", halted(), HUNG, True, (STOP,)),
    Case("halted-unforced-says-what-force-would-do", halted(), HUNG, False, (), (WOULD,)),
    Case("halted-protected-is-an-error", halted(protect=True), HUNG, True, (),
         errors=("instance web: protect: true; run strategy Halted would stop it on a",)),
    Case("always-spec-change-left-out-even-forced", changed(WEB, vcpus=2), HUNG, True, (), (LEFT_OUT,)),
    Case("manual-left-out", changed(WEB, run_strategy=RunStrategy.MANUAL), HUNG, True, (), (LEFT_OUT,)),
    Case("unreadable-record-never-signalled", halted(), UNREADABLE, True, (), (LEFT_OUT,)),
    Case("not-verified-unknown-never-signalled", halted(), replace(HUNG, qmp_unresponsive=False), True, (),
         (LEFT_OUT,)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_unresponsive_case(case: Case) -> None:
    plan = make_plan(desired(case.spec), actual(case.record), force=case.force)
    assert plan.actions == case.actions
    assert plan.warnings == case.warnings
    assert tuple(e.message for e in plan.errors) == case.errors


def test_the_forced_stop_is_rendered_with_its_reason() -> None:
    text = render_text(make_plan(desired(halted()), actual(HUNG), force=True))
    assert text == (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  - web on a\n"
        "      # QMP unresponsive; run strategy Halted: stopped by signal (SIGTERM, SIGKILL)\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 1 to stop.\n"
    )


def test_by_signal_in_json_only_when_set_and_round_trips() -> None:
    plan = Plan(actions=(STOP, replace(STOP, name="db", reason=Reason.PRUNED, by_signal=False)))
    data = plan_to_dict(plan)
    assert [a.get("by_signal") for a in data["actions"]] == [True, None]
    assert plan_from_dict(data) == plan


# --- saved plans: a slow monitor is named as such, not as a change -----------------------------------

THEN = RecordPrint("web", "a", "running", 101, 1700000000.25, "h1")


@pytest.mark.parametrize(("now", "unresponsive", "words"), [
    (replace(THEN, state="unknown"), True,
     "QMP slow/unresponsive (state running -> unknown; same process, pid 101)"),
    (replace(THEN, state="unknown"), False, "state running -> unknown"),  # e.g. an unreadable record
    (replace(THEN, state="unknown", pid=202, started_at=1.0), True,
     "state running -> unknown, pid 101 -> 202, started_at 1700000000.25 -> 1.0"),
    (replace(THEN, state="unknown", spec_hash="h2"), True, "state running -> unknown, spec_hash h1 -> h2"),
    (replace(THEN, state="stopped", pid=None), False, "state running -> stopped, pid 101 -> None"),
    (replace(THEN, state="paused"), False, "state running -> paused"),
])
def test_record_change_words(now: RecordPrint, unresponsive: bool, words: str) -> None:
    assert record_change(THEN, now, unresponsive) == words


def test_record_change_from_unknown_says_qmp_answers_now() -> None:
    then = replace(THEN, state="unknown")
    assert record_change(then, THEN, False) == (
        "QMP answers now (state unknown -> running; same process, pid 101): its state was unknown when the "
        "plan was made")


def test_check_fresh_names_the_unresponsive_monitor() -> None:
    running = replace(HUNG, state=RunState.RUNNING, qmp_unresponsive=False, detail="")
    d = desired(WEB, spec("new", node="a"))
    saved = SavedPlan(make_plan(d, actual(running)), fingerprint(d, actual(running)))
    assert check_fresh(saved, d, actual(running)) == ()
    assert check_fresh(saved, d, actual(HUNG)) == (
        "instance web on a: QMP slow/unresponsive (state running -> unknown; same process, pid 101)",)
