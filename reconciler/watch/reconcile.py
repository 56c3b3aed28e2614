"""One reconcile pass: load desired state, take the node locks, discover, plan, hold back, apply.

Every trigger leads here, and the pass never looks at what the trigger was (level-triggered). The pieces
with I/O are parameters (`discover`, `apply_plan`), so the pass's decisions can be tested with fakes and
the executor is reached through one seam, `ApplyPlan`.

Decisions that make the daemon differ from `apply`:
- A broken manifest file does not stop the pass: the cache hands in the last good version and says the
  tree is degraded; pruning is then off for this pass.
- Plan errors about one instance (split brain, unknown node, protected, a file it needs missing on its
  node: reconciler.hostcheck) drop that instance's actions only. Any other plan error (capacity,
  ordering, an empty tree with pruning on) applies nothing.
- The crash-loop backoff holds back automatic restarts of an instance that keeps dying: a START or
  RESTART of an instance under a hold waits, unless it carries a spec change (a fix should be tried
  at once). Failed starts count as exits.
- The node locks are held for the pass only (so a person can run `apply` between passes), taken in
  sorted order, waiting at most `lock_timeout`; the waiting happens on a thread so the loop keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from reconciler.actual import ActualState
from reconciler.errors import ReconcilerError
from reconciler.lock import Holder, LockTimeout, NodeLock
from reconciler.model import DesiredState, NodeSpec
from reconciler.planner import Action, ActionKind, Plan, Reason
from reconciler.values import Value
from reconciler.watch.backoff import CrashLoops, Hold
from reconciler.watch.cache import ManifestCache, Snapshot
from reconciler.watch.replan import Replanner
from reconciler.watch.triggers import Trigger, TriggerSource

EXIT_REASONS = frozenset({Reason.CRASHED, Reason.STALE_PIDFILE, Reason.PIDFILE_OTHER, Reason.STOPPED_OUTSIDE,
                          Reason.GUEST_POWERED_OFF})
_STARTS = frozenset({ActionKind.START, ActionKind.RESTART})
# A `git pull` may move HEAD without changing a manifest: look at the revision on these too.
_REVISION_TRIGGERS = frozenset({TriggerSource.RESYNC, TriggerSource.SIGHUP, TriggerSource.STARTUP})


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ActionOutcome(Value):
    """The outcome of one action of a pass."""

    action: Action
    ok: bool
    detail: str = ""
    seconds: float = 0.0
    outcome: str = ""  # the executor's word ("done", "failed", "skipped"); defaults from `ok`

    @property
    def word(self) -> str:
        return self.outcome or ("done" if self.ok else "failed")


class ApplyPlan(Protocol):
    """The seam to the executor: carry out `plan`; one outcome per action attempted."""

    def __call__(self, plan: Plan, desired: DesiredState, revision: str | None) -> Awaitable[
            Sequence[ActionOutcome]]: ...


Discover = Callable[[Sequence[NodeSpec]], Awaitable[ActualState]]
# The host checks (reconciler.hostcheck): the plan plus an error for each file, binary or bridge a launch
# lacks on its node; those errors drop the instance's actions, as other per-instance errors do.
CheckHosts = Callable[[Plan, DesiredState, ActualState], Awaitable[Plan]]
Revision = Callable[[], Awaitable[str | None]]
# Held for the whole pass: the daemon's fleet locks each node on the node (reconciler.watch.execute).
Locks = Callable[[Sequence[NodeSpec]], contextlib.AbstractAsyncContextManager[None]]


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class PassResult(Value):
    """One reconcile pass: what triggered it, what it saw and did."""

    number: int
    triggers: tuple[Trigger, ...]
    snapshot: Snapshot
    started: float  # epoch seconds
    seconds: float = 0.0
    actual: ActualState | None = None
    plan: Plan | None = None  # as the planner made it
    applied: tuple[Action, ...] = ()  # what was handed to the executor
    outcomes: tuple[ActionOutcome, ...] = ()
    held: tuple[Hold, ...] = ()  # restarts held back by the backoff
    dropped: tuple[Action, ...] = ()  # actions left out because of plan errors
    plan_blocked: bool = False  # a plan error that is not about one instance: nothing applied
    revision: str | None = None
    error: str | None = None  # the pass could not complete
    timings: tuple[tuple[str, float], ...] = ()  # (phase, seconds): load, revision, lock, discover, ...

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outcomes) and not (
            self.plan is not None and self.plan.errors)

    @property
    def changed(self) -> bool:
        return any(o.ok for o in self.outcomes)


@dataclass(slots=True)
class Reconciler:
    """One daemon's reconcile loop state."""

    cache: ManifestCache
    apply_plan: ApplyPlan
    discover: Discover
    revision: Revision
    loops: CrashLoops
    lock_timeout: float = 120.0
    on_lock_wait: Callable[[str, Holder | None], None] | None = None
    on_apply: Callable[[Sequence[Action]], None] | None = None  # told what is about to be carried out
    clock: Callable[[], float] = time.time
    check_hosts: CheckHosts | None = None
    locks: Locks | None = None  # the node locks of a pass (default: every node's lock on this machine)
    passes: int = 0
    replanner: Replanner = field(default_factory=Replanner)  # make_plan, on what may have changed only
    # The instances this pass's discovery looked at (None: all, or unknown): what the replan must redo.
    looked_at: Callable[[], Collection[str] | None] | None = None
    _revision: str | None = field(default=None, init=False)

    async def step(self, triggers: Sequence[Trigger]) -> PassResult:
        self.passes += 1
        t0 = self.clock()
        timer = _Timer()
        snapshot = self.cache.refresh(changed_paths(triggers))
        timer.lap("load")
        base = PassResult(self.passes, tuple(triggers), snapshot, t0, revision=self._revision)
        desired = snapshot.desired
        if desired is None:
            return replace(base, seconds=self.clock() - t0, timings=timer.laps,
                           error="no consistent set of manifests: " + "; ".join(snapshot.blocked[:3]))
        looked = {t.source for t in triggers}
        revision: asyncio.Future[str | None] | None = None
        if snapshot.reparsed or self.passes == 1 or looked & _REVISION_TRIGGERS:
            revision = asyncio.ensure_future(self.revision())  # git runs while we lock and discover
        nodes = [desired.nodes[n] for n in sorted(desired.nodes)]
        try:
            async with (self.locks or self._locks)(nodes):
                timer.lap("lock")
                result = await self._locked(base, desired, nodes, snapshot, timer, revision)
        except ReconcilerError as err:
            result = replace(base, error=str(err))
        finally:
            if revision is not None and not revision.done():
                revision.cancel()
        return replace(result, seconds=self.clock() - t0, timings=timer.laps)

    async def _locked(self, base: PassResult, desired: DesiredState, nodes: list[NodeSpec],
                      snapshot: Snapshot, timer: _Timer,
                      revision: asyncio.Future[str | None] | None) -> PassResult:
        actual = await self.discover(nodes)
        timer.lap("discover")
        if revision is not None:
            self._revision = await revision
            timer.lap("revision")
        base = replace(base, revision=self._revision)
        plan = self.replanner.plan(desired, actual, prune=False if snapshot.degraded else None,
                                   actual_changed=self.looked_at() if self.looked_at is not None else None)
        timer.lap("plan")
        if self.check_hosts is not None and plan.actions:
            plan = await self.check_hosts(plan, desired, actual)
            timer.lap("check")
        now = self.clock()
        running = {i.name for i in actual.instances if i.state.has_process}
        self.loops.forgive(running, now)
        todo, dropped, blocked = drop_unappliable(plan)
        todo, held = self.hold_back(todo, now)
        result = replace(base, actual=actual, plan=plan, applied=tuple(todo), held=tuple(held),
                         dropped=tuple(dropped), plan_blocked=blocked)
        if not todo:
            return result
        for action in todo:
            if action.kind in _STARTS and action.reason in EXIT_REASONS:
                self.loops.restarted(action.name, now)
        if self.on_apply is not None:
            self.on_apply(todo)
        outcomes = tuple(await self.apply_plan(replace(plan, actions=tuple(todo)), desired, self._revision))
        timer.lap("apply")
        for o in outcomes:
            if not o.ok and o.action.kind in _STARTS and o.word == "failed":
                self.loops.failed(o.action.name, self.clock())
        return replace(result, outcomes=outcomes)

    def hold_back(self, actions: Sequence[Action], now: float) -> tuple[list[Action], list[Hold]]:
        """Split actions into those to run now and the restarts the crash-loop backoff holds back."""
        keep: list[Action] = []
        held: list[Hold] = []
        for action in actions:
            hold = self.loops.hold(action.name, now) if action.kind in _STARTS else None
            if hold is not None and not action.changes:
                held.append(hold)
            else:
                keep.append(action)
        return keep, held

    @contextlib.asynccontextmanager
    async def _locks(self, nodes: Sequence[NodeSpec]) -> AsyncIterator[None]:
        from reconciler import layout, statedir

        held: list[NodeLock] = []
        deadline = time.monotonic() + self.lock_timeout
        try:
            for node in sorted(nodes, key=lambda n: layout.node_lock(n)):
                statedir.ensure_dir(node.state_dir)
                lock = NodeLock(layout.node_lock(node), "watch")
                await _acquire(lock, deadline, self.on_lock_wait)
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()


async def _acquire(lock: NodeLock, deadline: float,
                   on_wait: Callable[[str, Holder | None], None] | None) -> None:
    try:
        lock.acquire(0)  # the usual case: free, no thread needed
        return
    except LockTimeout as err:
        if on_wait is not None:
            on_wait(lock.path, err.holder)
    # Wait on a thread; if we are cancelled meanwhile, let it finish (bounded by the deadline) and
    # release what it got, so a cancelled pass never leaves a node locked.
    waiting = asyncio.ensure_future(asyncio.to_thread(lock.acquire, max(deadline - time.monotonic(), 0.0)))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await waiting
            lock.release()
        raise


class _Timer:
    """Phase durations of one pass, for the log line (monotonic clock)."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.laps: tuple[tuple[str, float], ...] = ()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.laps += ((phase, now - self._last),)
        self._last = now


def drop_unappliable(plan: Plan) -> tuple[list[Action], list[Action], bool]:
    """(actions to run, actions dropped, blocked): see the module doc for the rule."""
    if not plan.errors:
        return list(plan.actions), [], False
    names = set()
    for err in plan.errors:
        kind, _, name = err.subject.partition(" ")
        if kind != "instance" or not name:
            return [], list(plan.actions), True
        names.add(name)
    keep = [a for a in plan.actions if a.name not in names]
    return keep, [a for a in plan.actions if a.name in names], False



def changed_paths(triggers: Sequence[Trigger]) -> frozenset[str] | None:
    """The manifest paths these triggers say changed; None when the whole tree must be looked at.

    The triggers that look at the git revision again also look at every file.

    Only file events change files: a pass for a QEMU exit or a backoff looks at no file at all. The
    startup, the periodic resync and SIGHUP look at everything (and so repair any missed event).
    """
    paths: set[str] = set()
    for t in triggers:
        if t.source in _REVISION_TRIGGERS or (t.source is TriggerSource.FILE and t.paths is None):
            return None
        if t.source is TriggerSource.FILE and t.paths is not None:
            paths.update(t.paths)
    return frozenset(paths)
