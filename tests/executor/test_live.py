"""The live update's QMP conversation (executor.live) against a fake monitor: the order of the steps,
the balloon confirmed by BALLOON_CHANGE (not by its command's answer) within its deadline, and steps
QEMU already shows done are skipped. Real QEMU is in tests/e2e/test_live_update.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from reconciler.errors import QmpCommandError
from reconciler.executor.context import Context, Deadlines
from reconciler.executor.live import _balloon, _converge, _mismatch, _Moving
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.progress import RecordingProgress
from reconciler.hotplug import MIB, Plugged, SizeView
from reconciler.model import InstanceSpec

from .fakes import FakeSession

SPEC = InstanceSpec("web", 128, max_memory_mib=384, vcpus=1, max_vcpus=2)
SLOTS = [{"props": {"core-id": 1, "thread-id": 0, "node-id": 0, "socket-id": 0}, "vcpus-count": 1,
          "type": "qemu64-x86_64-cpu"},
         {"props": {"core-id": 0, "thread-id": 0, "node-id": 0, "socket-id": 0}, "vcpus-count": 1,
          "qom-path": "/machine/unattached/device[0]", "type": "qemu64-x86_64-cpu"}]
DIMM0 = [{"type": "dimm", "data": {"id": "dimm0", "size": 128 * MIB, "memdev": "/objects/mem-dimm0"}}]


def ctx(balloon: float = 5.0) -> Context:
    return Context(nodes={}, specs={}, progress=RecordingProgress(), deadlines=Deadlines(balloon=balloon),
                   owner=(1, 1.0))


class Guest:
    """QEMU's balloon as the guest moves it: `actual` follows a `balloon` command, announced by events.
    `halfway`: the first event (QEMU's rate limit holds the next for a second) is on the way there."""

    def __init__(self, actual_mib: int, reaches: bool = True, halfway: bool = False) -> None:
        self.actual = actual_mib * MIB
        self.reaches = reaches
        self.halfway = halfway

    def balloon(self, s: FakeSession, args: Mapping[str, object] | None) -> dict[str, Any]:
        assert args is not None and isinstance(args["value"], int)
        target = args["value"]
        if self.halfway:  # the event comes once the guest has begun, after the command's answer
            s.emit("BALLOON_CHANGE", actual=(self.actual + target) // 2)
        elif self.reaches:
            halfway = (self.actual + target) // 2
            self.actual = target
            s.emit("BALLOON_CHANGE", actual=halfway)  # the guest moves it in steps
            s.emit("BALLOON_CHANGE", actual=target)
        return {}

    def query(self, s: FakeSession, args: Mapping[str, object] | None) -> dict[str, Any]:
        lags = self.reaches and not self.halfway
        return {"actual": self.actual - MIB if lags else self.actual}  # lags the events


def session(guest: Guest, devices: list[Any] | None = None, cpus: int = 1) -> FakeSession:
    return FakeSession({
        "query-memory-size-summary": {"base-memory": 128 * MIB, "plugged-memory": 0},
        "query-memory-devices": devices or [],
        "query-hotpluggable-cpus": SLOTS,
        "query-cpus-fast": [{"cpu-index": i} for i in range(cpus)],
        "query-balloon": guest.query,
        "query-memdev": [{"id": "pc.ram", "size": 128 * MIB}] + [
            {"id": f"mem-{d['data']['id']}", "size": d["data"]["size"]} for d in devices or []],
        "balloon": guest.balloon,
    })


def steps_of(change: Any) -> list[str]:
    steps, moving = asyncio.run(change)
    assert moving is None
    return list(steps)


def test_up_a_dimm_then_the_balloon_then_a_cpu() -> None:
    s = session(Guest(128))
    want = InstanceSpec("web", 256, max_memory_mib=384, vcpus=2, max_vcpus=2)
    steps = steps_of(_converge(ctx(), s, want))
    assert steps == ["DIMM dimm0 of 128 MiB", "balloon 256 MiB", "vCPUs 1 -> 2"]
    changes = [(c, a) for c, a in s.commands if not c.startswith("query-")]
    assert changes == [
        ("object-add", {"qom-type": "memory-backend-ram", "id": "mem-dimm0", "size": 128 * MIB}),
        ("device_add", {"driver": "pc-dimm", "id": "dimm0", "memdev": "mem-dimm0"}),
        ("balloon", {"value": 256 * MIB}),
        ("device_add", {"driver": "qemu64-x86_64-cpu", "id": "vcpu0-1-0", "socket-id": 0, "core-id": 1,
                        "thread-id": 0, "node-id": 0}),
    ]


def test_a_dimm_qemu_already_has_is_not_plugged_again() -> None:
    """What a run killed after its device_add left: the next one reads it back and only balloons."""
    s = session(Guest(200), devices=DIMM0, cpus=2)
    want = InstanceSpec("web", 256, max_memory_mib=384, vcpus=2, max_vcpus=2)
    assert steps_of(_converge(ctx(), s, want)) == ["balloon 256 MiB"]
    assert "device_add" not in s.names and "object-add" not in s.names


def test_a_backend_left_without_its_dimm_is_removed_before_plugging() -> None:
    """A run killed between object-add and device_add left mem-dimm0: it goes, then dimm0 is plugged."""
    s = session(Guest(128))
    s.replies["query-memdev"] = [{"id": "pc.ram", "size": 128 * MIB}, {"id": "mem-dimm0", "size": 128 * MIB}]
    steps = steps_of(_converge(ctx(), s, InstanceSpec("web", 256, max_memory_mib=384)))
    assert steps == ["unused mem-dimm0 removed", "DIMM dimm0 of 128 MiB", "balloon 256 MiB"]
    assert [c for c in s.names if not c.startswith("query-")] == ["object-del", "object-add", "device_add",
                                                                  "balloon"]


def test_down_with_the_balloon_only() -> None:
    s = session(Guest(128))
    assert steps_of(_converge(ctx(), s, InstanceSpec("web", 96, max_memory_mib=384))) == ["balloon 96 MiB"]
    assert [c for c in s.names if not c.startswith("query-")] == ["balloon"]


def test_the_balloon_is_confirmed_by_events_within_its_deadline() -> None:
    s = session(Guest(128, reaches=False))
    with pytest.raises(ActionFailed) as info:
        asyncio.run(_balloon(ctx(balloon=0.2), s, 64))
    assert str(info.value) == "the guest did not move its balloon to 64 MiB within 0.2s (at 128 MiB)"


def test_a_balloon_seen_on_its_way_is_confirmed_without_the_rate_limited_last_event() -> None:
    """The first BALLOON_CHANGE that shows the balloon closer to the target than it was when set confirms
    it (QEMU holds the next event for a second); the read-back then accepts a balloon on that way."""
    s = session(Guest(128, halfway=True))
    spec = InstanceSpec("web", 96, max_memory_mib=384)
    steps, moving = asyncio.run(_converge(ctx(), s, spec))
    assert steps == ["balloon 96 MiB (at 112 MiB, the guest moving it)"]
    assert moving == _Moving(from_mib=128, at_mib=112)
    seen = SizeView(128, Plugged(), 100, 1, SLOTS)
    assert _mismatch(seen, spec, _Moving(128, 112)) == ""
    assert _mismatch(seen, spec) == "balloon at 100 MiB, 96 MiB wanted"
    wrong_way = SizeView(128, Plugged(), 130, 1, SLOTS)
    assert _mismatch(wrong_way, spec, _Moving(128, 112)) == "balloon at 130 MiB, 96 MiB wanted"


def test_an_event_no_closer_than_the_balloon_was_does_not_confirm_it() -> None:
    """A BALLOON_CHANGE queued before the command (or the guest moving the other way) is no confirmation:
    without one on the way, the deadline fails the action."""
    s = session(Guest(128, reaches=False))
    s.emit("BALLOON_CHANGE", actual=130 * MIB)  # an old event, away from the target
    with pytest.raises(ActionFailed) as info:
        asyncio.run(_balloon(ctx(balloon=0.2), s, 64))
    assert str(info.value) == "the guest did not move its balloon to 64 MiB within 0.2s (at 130 MiB)"


def test_a_refused_hotplug_is_a_qmp_error() -> None:
    s = session(Guest(128))
    s.replies["device_add"] = QmpCommandError("fake.sock", "No free slots", "device_add", "GenericError")
    with pytest.raises(QmpCommandError):
        steps_of(_converge(ctx(), s, InstanceSpec("web", 256, max_memory_mib=384)))
