"""Crash-loop backoff: how long the daemon holds back an automatic restart of an instance that keeps dying.

The run strategy says *whether* an exited instance is restarted; this says *when*. A QEMU that exits
right after every start would otherwise be restarted as fast as the daemon can notice, burning CPU and
flooding the log. So, as Kubernetes' CrashLoopBackOff does: the first automatic restart is immediate;
each further one within the reset window waits twice as long as the previous wait (base, 2*base, ...),
capped; an instance that stays up for `reset_after` seconds is forgiven. Failed starts count like exits.

Pure: the caller passes the clock reading (epoch seconds, so holds can be shown in `status`); nothing
here sleeps or reads time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class BackoffPolicy(Value):
    """How automatic restarts back off."""

    base: float = 1.0  # seconds before the second automatic restart
    cap: float = 300.0  # the longest wait
    reset_after: float = 600.0  # seconds of uptime (or quiet) after which the count starts over

    def delay(self, restarts: int) -> float:
        """The wait after the `restarts`-th automatic restart before the next one may happen."""
        if restarts <= 0:
            return 0.0
        return min(self.base * 2.0 ** (restarts - 1), self.cap)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class LoopState(Value):
    """One instance's recent automatic restarts."""

    restarts: int  # consecutive automatic restarts (starts that failed count too)
    last_restart: float  # clock reading of the last one
    not_before: float  # the next automatic restart may not happen before this


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Hold(Value):
    """A restart held back, as `status` and the log show it."""

    name: str
    restarts: int
    not_before: float

    def remaining(self, now: float) -> float:
        return max(self.not_before - now, 0.0)


@dataclass(slots=True)
class CrashLoops:
    """Every instance's loop state; the daemon's only mutable piece of backoff."""

    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    states: dict[str, LoopState] = field(default_factory=dict)

    def hold(self, name: str, now: float) -> Hold | None:
        """The hold on an automatic restart of `name` now, or None if it may restart."""
        state = self.states.get(name)
        if state is None or now >= state.not_before:
            return None
        return Hold(name, state.restarts, state.not_before)

    def restarted(self, name: str, now: float) -> LoopState:
        """Record an automatic restart of `name` (call when it is attempted)."""
        state = self.states.get(name)
        restarts = 1 if state is None or now - state.last_restart >= self.policy.reset_after else (
            state.restarts + 1)
        new = LoopState(restarts, now, now + self.policy.delay(restarts))
        self.states[name] = new
        return new

    def failed(self, name: str, now: float) -> None:
        """A start attempt failed: the next attempt waits as after a restart (already counted)."""
        state = self.states.get(name)
        if state is None:
            self.restarted(name, now)
        else:
            self.states[name] = replace(state, not_before=max(state.not_before, now + self.policy.delay(
                state.restarts)))

    def forgive(self, running: set[str], now: float) -> list[str]:
        """Forget instances that stayed up `reset_after` seconds since their last automatic restart
        (and, after a further `cap`, those no longer running at all). Returns the forgiven names."""
        window = self.policy.reset_after
        gone = [n for n, s in self.states.items()
                if now - s.last_restart >= (window if n in running else window + self.policy.cap)]
        for n in gone:
            del self.states[n]
        return gone

    def holds(self, now: float) -> list[Hold]:
        return sorted((Hold(n, s.restarts, s.not_before) for n, s in self.states.items()
                       if s.not_before > now), key=lambda h: h.name)

    def next_expiry(self, now: float) -> float | None:
        """The earliest moment a held restart becomes allowed (for a timer), or None."""
        pending = [s.not_before for s in self.states.values() if s.not_before > now]
        return min(pending) if pending else None
