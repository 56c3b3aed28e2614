"""Crash-loop backoff (pure): immediate first restart, doubling waits, a cap, forgiveness after uptime."""

from __future__ import annotations

import pytest

from reconciler.watch.backoff import BackoffPolicy, CrashLoops, Hold

POLICY = BackoffPolicy(base=1.0, cap=8.0, reset_after=60.0)


@pytest.mark.parametrize(("restarts", "delay"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0),
                                                 (40, 8.0)])
def test_delay_doubles_and_caps(restarts: int, delay: float) -> None:
    assert POLICY.delay(restarts) == delay


def test_first_restart_is_immediate_then_waits_double() -> None:
    loops = CrashLoops(POLICY)
    assert loops.hold("vm", 100.0) is None
    loops.restarted("vm", 100.0)  # 1st: allowed at once; the next waits 1 s
    assert loops.hold("vm", 100.5) == Hold("vm", 1, 101.0)
    assert loops.hold("vm", 101.0) is None
    loops.restarted("vm", 101.0)  # 2nd: the next waits 2 s
    assert loops.hold("vm", 102.9) == Hold("vm", 2, 103.0)
    loops.restarted("vm", 103.0)
    assert loops.next_expiry(103.0) == 107.0
    assert [h.name for h in loops.holds(104.0)] == ["vm"]
    assert loops.holds(107.0) == []


def test_restart_after_the_reset_window_counts_from_one() -> None:
    loops = CrashLoops(POLICY)
    for t in (0.0, 1.0, 3.0):
        loops.restarted("vm", t)
    assert loops.restarted("vm", 3.0 + 60.0).restarts == 1


def test_other_instances_are_independent() -> None:
    loops = CrashLoops(POLICY)
    loops.restarted("a", 0.0)
    assert loops.hold("b", 0.0) is None


def test_failed_start_pushes_the_next_attempt() -> None:
    loops = CrashLoops(POLICY)
    loops.failed("vm", 10.0)  # never restarted before: counts as the first
    assert loops.hold("vm", 10.5) == Hold("vm", 1, 11.0)
    loops.restarted("vm", 11.0)
    loops.failed("vm", 20.0)  # long after the hold ended: wait delay(2) from now
    assert loops.hold("vm", 21.0) == Hold("vm", 2, 22.0)


def test_forgive_after_uptime_and_after_long_absence() -> None:
    loops = CrashLoops(POLICY)
    loops.restarted("up", 0.0)
    loops.restarted("gone", 0.0)
    assert loops.forgive({"up"}, 59.0) == []
    assert loops.forgive({"up"}, 60.0) == ["up"]
    assert loops.forgive(set(), 67.9) == []
    assert loops.forgive(set(), 68.0) == ["gone"]
    assert loops.states == {}


def test_hold_remaining() -> None:
    assert Hold("vm", 3, 10.0).remaining(7.5) == 2.5
    assert Hold("vm", 3, 10.0).remaining(11.0) == 0.0
