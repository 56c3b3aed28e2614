"""`plan` and `status` agree on fields that need no restart: before the record update, the plan has a `~`
action and status says "differs"; after it, the plan is empty and status says "match" (issue 11, bug 1)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.commands.status import build_rows
from reconciler.model import Migration, RunStrategy, UpdatePolicy, spec_hash
from reconciler.planner import ActionKind, make_plan
from reconciler.planner.policy import record_spec

from .factories import desired, spec

WEB = spec("web", node="a")


def _running(recorded: Any) -> ActualState:
    return ActualState(instances=(ActualInstance("web", "a", RunState.RUNNING, recorded,
                                                 spec_hash=spec_hash(recorded), pid=1000, started_at=1.0),))


@pytest.mark.parametrize("change", [
    {"protect": True}, {"labels": (("tier", "web"),)}, {"run_strategy": RunStrategy.RERUN_ON_FAILURE},
    {"shutdown_timeout": 5.0}, {"migration": Migration(max_bandwidth=10)},
    {"update_policy": UpdatePolicy.PENDING}, {"node": None},
], ids=lambda c: next(iter(c)))
def test_plan_and_status_agree_before_and_after_the_update(change: dict[str, Any]) -> None:
    want = desired(replace(WEB, **change))
    before = _running(WEB)
    plan = make_plan(want, before)
    assert [(a.kind, a.name) for a in plan.actions] == [(ActionKind.UPDATE, "web")]
    assert [r.spec_match for r in build_rows(want, before, 2.0)] == [False]

    after = _running(record_spec(WEB, want.instances["web"], "a"))
    assert make_plan(want, after).empty
    assert [r.spec_match for r in build_rows(want, after, 2.0)] == [True]
