"""SIGKILL of the reconciler (`apply`, and the `watch` daemon) at seeded random points of a start, stop,
restart and migration; then the invariants, then a reconcile that must converge.

Each trial: a fresh rig (decoys, a bystander "keep" running on node-a), the precondition applied, the
manifests changed, the reconciler spawned, a seeded delay after the action's first progress line (or,
for one trial in five, from the spawn: lock, discovery and planning), SIGKILL. The id carries the seed:
`pytest 'tests/reliability/faults/test_sigkill.py::test_sigkill_apply[migrate-seed7]'` replays the
same delay. CI runs 3 seeds per action kind for apply and 1 for watch; RECONCILER_LONG=1 runs 50 each.
`test_sigint_apply` sends Ctrl-C (SIGINT) instead, at the same points, and `test_sigterm_watch` SIGTERM to
a daemon with a 0.2 s shutdown grace: 1 seed per kind in CI, 12 long.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from executor.kit import Lines

from .kit import Rig, rng_for, signal_after, trials

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@dataclass(frozen=True)
class Scenario:
    """How to set up the precondition, what change to make, and the window of the fault."""

    before: Callable[[Rig, dict[str, object]], None]
    change: Callable[[Rig, dict[str, object]], None]
    needle: str  # the progress text that starts the clock
    window: float  # seconds after the needle in which the SIGKILL lands (uniformly)
    final: dict[str, str | None]
    migrating: frozenset[str] = frozenset()


def _halted(rig: Rig, opts: dict[str, object]) -> None:
    rig.declare("web1", "node-a", runStrategy="Halted")
    rig.declare("web2", "node-b", runStrategy="Halted")
    rig.apply_ok()


def _start(rig: Rig, opts: dict[str, object]) -> None:
    rig.declare("web1", "node-a")
    rig.declare("web2", "node-b")


def _running(rig: Rig, opts: dict[str, object]) -> None:
    rig.declare("web1", "node-a", **_mig(opts))
    rig.apply_ok()
    rig.wait_ready("node-a", "web1")  # so ACPI works and a migration moves a live guest


def _stop(rig: Rig, opts: dict[str, object]) -> None:
    rig.declare("web1", "node-a", runStrategy="Halted")


def _restart(rig: Rig, opts: dict[str, object]) -> None:
    rig.declare("web1", "node-a", memory="160M")


def _mig(opts: dict[str, object]) -> dict[str, object]:
    return {"migration": {"mode": opts.get("mode", "live"), "maxBandwidth": opts.get("bandwidth", 0)}}


def _migrate(rig: Rig, opts: dict[str, object]) -> None:
    rig.declare("web1", "node-b", **_mig(opts))


SCENARIOS = {
    "start": Scenario(_halted, _start, "starting on", 0.25, {"web1": "node-a", "web2": "node-b"}),
    "stop": Scenario(_running, _stop, "stopping on", 0.25, {"web1": None}),
    "restart": Scenario(_running, _restart, "stopping on", 0.4, {"web1": "node-a"}),
    "migrate": Scenario(_running, _migrate, "migrating node-a", 2.0, {"web1": "node-b"},
                        frozenset({"web1"})),
}


def _options(kind: str, seed: int) -> tuple[dict[str, object], str | None, float, tuple[str, ...]]:
    rng = rng_for(kind, seed)
    scenario = SCENARIOS[kind]
    opts: dict[str, object] = {"mode": rng.choice(["live", "offline"]),
                               "bandwidth": rng.choice([0, 0, "32M"])}
    early = rng.random() < 0.2
    delay = rng.uniform(0.0, 0.8) if early else rng.uniform(0.0, scenario.window)
    extra = ("--force",) if kind == "stop" and rng.random() < 0.3 else ()
    return opts, None if early else scenario.needle, delay, extra


Spawn = Callable[[Rig, tuple[str, ...], Callable[[], None]], Lines]


def _trial(rig: Rig, kind: str, seed: int, spawn: Spawn, sig: signal.Signals = signal.SIGKILL) -> None:
    scenario = SCENARIOS[kind]
    opts, needle, delay, extra = _options(kind, seed)
    scenario.before(rig, opts)
    rig.check_fault()
    lines = spawn(rig, extra, lambda: scenario.change(rig, opts))
    landed, out = signal_after(lines, needle, delay, sig)
    cut = " (pass cancelled)" if "abandoning-pass" in out else ""
    where = needle or "spawn"
    print(f"{kind} seed {seed}: delay {delay:.3f}s after {where}; {sig.name} landed: {landed}{cut}")
    if sig is not signal.SIGKILL:  # an interrupted action unwinds: a migration is aborted, never half-left
        assert "internal error" not in out, out
        rig.check_fault()
    rig.check_fault(scenario.migrating)
    if kind == "migrate":  # the instance is never lost: one copy runs the guest
        assert len(rig.guests("web1")) == 1, rig.guests("web1")
    rig.converge(scenario.final)


def _apply(rig: Rig, extra: tuple[str, ...], change: Callable[[], None]) -> Lines:
    change()
    return rig.spawn("apply", "--yes", *extra)


def _watch(rig: Rig, extra: tuple[str, ...], change: Callable[[], None]) -> Lines:
    lines = rig.spawn_watch()  # converged already: its first pass does nothing
    change()  # the file event starts the pass we kill
    return lines


def _watch_short_grace(rig: Rig, extra: tuple[str, ...], change: Callable[[], None]) -> Lines:
    lines = rig.spawn_watch(grace=0.2)  # a SIGTERM mid-action usually outlasts it: the pass is cancelled
    change()
    return lines


def _ids(ci: int, long: int) -> list[Any]:
    return [pytest.param(kind, seed, id=f"{kind}-seed{seed}")
            for kind in SCENARIOS for seed in trials(ci, long)]


@pytest.mark.parametrize(("kind", "seed"), _ids(3, 50))
def test_sigkill_apply(rig: Rig, kind: str, seed: int) -> None:
    _trial(rig, kind, seed, _apply)


@pytest.mark.parametrize(("kind", "seed"), _ids(1, 12))
def test_sigint_apply(rig: Rig, kind: str, seed: int) -> None:
    """Ctrl-C instead of SIGKILL: `apply` exits by itself (130) and leaves no migration target behind."""
    _trial(rig, kind, seed, _apply, signal.SIGINT)


@pytest.mark.parametrize(("kind", "seed"), _ids(1, 50))
def test_sigkill_watch(rig: Rig, kind: str, seed: int) -> None:
    _trial(rig, kind, seed, _watch)


@pytest.mark.parametrize(("kind", "seed"), _ids(1, 12))
def test_sigterm_watch(rig: Rig, kind: str, seed: int) -> None:
    """SIGTERM to the daemon with a 0.2 s shutdown grace: it exits 0 by itself, its cancelled pass leaves
    no migration target behind."""
    _trial(rig, kind, seed, _watch_short_grace, signal.SIGTERM)
