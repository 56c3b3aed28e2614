"""A monitor that missed discovery's short deadline is asked once more (node.ask_again): an answer
replaces the unknown state (and the first miss's words), a second miss keeps it unresponsive, and only
verified unresponsive records are asked at all."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from reconciler import discovery
from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.errors import QmpTimeout
from reconciler.node import ask_again

BASE = ActualInstance("web", "a", RunState.UNKNOWN, None, pid=101, started_at=1.0)


class Session:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.closed = False

    @property
    def socket_path(self) -> str:
        return "web.qmp"

    async def execute(self, command: str, arguments: object = None, timeout: float = 5.0) -> Any:
        assert command == "query-status"
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    async def close(self) -> None:
        self.closed = True


class AskedNode:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, float, bool]] = []

    async def qmp(self, instance: str, timeout: float, *, patient: bool = False,
                  plain: bool = False) -> Session:
        self.asked.append((instance, timeout, patient))
        return Session(self.answers[instance])


@pytest.mark.parametrize(("detail", "answer", "state", "after"), [
    ("", "running", RunState.RUNNING, ""),
    ("pidfile missing", "paused", RunState.PAUSED, "pidfile missing"),
    ("", QmpTimeout("web.qmp", "no greeting within 5s"), RunState.UNKNOWN, "QMP did not answer in time"),
    ("pidfile missing", QmpTimeout("web.qmp", "x"), RunState.UNKNOWN,
     "pidfile missing; QMP did not answer in time"),
])
def test_asked_again(detail: str, answer: Any, state: RunState, after: str) -> None:
    first = discovery.with_status(replace(BASE, detail=detail), QmpTimeout("web.qmp", "no greeting"))
    assert first.qmp_unresponsive and first.state is RunState.UNKNOWN
    again = discovery.asked_again(first, answer)
    assert (again.state, again.detail, again.qmp_unresponsive) == (state, after, state is RunState.UNKNOWN)
    assert (again.pid, again.started_at) == (101, 1.0)


def test_only_verified_unresponsive_records_are_asked_patiently_with_the_given_deadline() -> None:
    slow = discovery.with_status(BASE, QmpTimeout("web.qmp", "no greeting"))
    unreadable = replace(BASE, name="db", detail="record unreadable")  # UNKNOWN, identity never proved
    running = replace(BASE, name="ok", state=RunState.RUNNING)
    node = AskedNode({"web": {"status": "running"}})
    state = ActualState(instances=(unreadable, running, slow))
    after = asyncio.run(ask_again({"a": node}, state, 5.0))  # type: ignore[dict-item]
    assert node.asked == [("web", 5.0, True)]  # patient: a full backlog is waited out
    assert [(i.name, i.state) for i in after.instances] == [
        ("db", RunState.UNKNOWN), ("ok", RunState.RUNNING), ("web", RunState.RUNNING)]


def test_nothing_to_ask_returns_the_same_state() -> None:
    state = ActualState(instances=(replace(BASE, state=RunState.RUNNING),))
    assert asyncio.run(ask_again({}, state, 5.0)) is state
