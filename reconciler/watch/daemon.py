"""The daemon's loop: wait for triggers, debounce, run one reconcile pass, report, repeat; stop cleanly.

Everything runs on one asyncio loop: the file observer's thread and the signal handlers only put
triggers on the queue, QEMU watchers are tasks, and passes run one at a time (triggers that come during
a pass are gathered into the next one, which is correct because passes are level-triggered).

After each pass: metrics, the state file for `status`, one log line per event (actions, manifest errors
as they appear and disappear, held restarts, plan errors), sd_notify (READY=1 after the first pass,
STATUS= after each), QEMU watchers following the instances discovery found alive, a timer for the next
held restart, and a follow-up pass when actions succeeded (to watch the new processes and check that
nothing is left to do; at most `MAX_FOLLOWUPS` in a row so a plan that never converges cannot spin).

Remote nodes: the daemon keeps one SSH link per host for its life (reconciler.watch.hosts); each pass
works on the fleet of that moment (reconciler.watch.execute.FleetPass), the watchers of remote QEMUs hear
of exits and events from their hosts over those links, and a host whose link is lost or back wakes a
pass (HOST triggers); unreachable nodes are logged when that changes and written to the state file.

SIGTERM/SIGINT: no new pass starts; a pass in flight may finish within `shutdown_grace` seconds (a
second signal abandons it at once); then it is cancelled (the executor's intents make that safe: the
next start adopts or cleans what it left). QEMU processes are not the daemon's children (they run in
their own sessions), so they keep running; the next daemon picks them up without touching them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler import gitinfo
from reconciler.actual import RunState, UnreachableNode
from reconciler.errors import ReconcilerError
from reconciler.lock import Holder
from reconciler.planner import Action
from reconciler.planner.actions import ActionKind, Held
from reconciler.values import Value
from reconciler.watch import statusfile
from reconciler.watch.backoff import BackoffPolicy, CrashLoops
from reconciler.watch.cache import ManifestCache
from reconciler.watch.debounce import Debounce, collect
from reconciler.watch.hosts import RECONNECT
from reconciler.watch.known import Known
from reconciler.watch.logfmt import EventLog
from reconciler.watch.metrics import Metrics, MetricsServer
from reconciler.watch.notify import Notifier
from reconciler.watch.reconcile import ApplyPlan, Discover, PassResult, Reconciler
from reconciler.watch.triggers import (
    ExitWatchers,
    FileWatcher,
    Observation,
    Trigger,
    TriggerSource,
    Watched,
    jittered,
)

MAX_FOLLOWUPS = 5
CANCEL_TIMEOUT = 15.0  # seconds for a cancelled pass to unwind

# Actions whose own stop, reset or hand-off of the QEMU the watchers see (logged as ours, not counted).
_ACTS_ON_THE_PROCESS = frozenset(ActionKind) - {ActionKind.START, ActionKind.NOOP}


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DaemonConfig(Value):
    """How `watch` runs."""

    roots: tuple[str, ...]
    debounce: Debounce = field(default_factory=Debounce)
    resync_interval: float = 60.0
    lock_timeout: float = 120.0
    shutdown_grace: float = 30.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    status_file: str | None = None
    metrics_address: tuple[str, int] | None = None
    parallel: int = 4
    reconnect: BackoffPolicy = RECONNECT  # delays between attempts to reach a lost host again


class Daemon:
    def __init__(self, config: DaemonConfig, log: EventLog, *, apply_plan: ApplyPlan | None = None,
                 discover: Discover | None = None, notifier: Notifier | None = None,
                 metrics: Metrics | None = None) -> None:
        from reconciler.watch.execute import ExecutorApply, FleetPass
        from reconciler.watch.hosts import HostLinks

        self.config = config
        self.log = log
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.loops = CrashLoops(config.backoff)
        self.hosts = HostLinks(self.emit, log, config.reconnect)
        self.known = Known()  # incremental discovery (reconciler.watch.known)
        steps = FleetPass(self.hosts, config.lock_timeout, self._lock_wait, self.known)
        self.reconciler = Reconciler(
            cache=ManifestCache(config.roots),
            apply_plan=apply_plan or ExecutorApply(log, config.parallel, steps.nodes),
            discover=discover or steps.discover, revision=self._git_revision, loops=self.loops,
            lock_timeout=config.lock_timeout, on_lock_wait=self._lock_wait, on_apply=self._applying,
            check_hosts=steps.check_hosts, locks=steps.locked if discover is None else None,
            looked_at=self._looked_at if discover is None else None)
        self.metrics_server: MetricsServer | None = None
        self._queue: asyncio.Queue[Trigger] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._abandon = asyncio.Event()
        self._watchers = ExitWatchers(self.emit, self._observed, self.hosts.port_of, self.known.touched)
        self._backoff_timer: asyncio.TimerHandle | None = None
        self._followups = 0
        self._acting: set[str] = set()  # instances the pass in flight is acting on
        self._ready = False
        self._last_success: float | None = None
        self._status_path = config.status_file
        self._shown_errors: dict[str, tuple[str, ...]] = {}
        self._shown_plan_errors: tuple[str, ...] = ()
        self._unreachable: dict[str, UnreachableNode] = {}  # as the last discovery found them
        self._shown_held: tuple[Held, ...] = ()

    def emit(self, trigger: Trigger) -> None:
        self._queue.put_nowait(trigger)

    async def run(self) -> int:
        _raise_fd_limit()  # two descriptors per watched instance (pidfd + QMP)
        loop = asyncio.get_running_loop()
        if self.config.metrics_address is not None:  # first: a bad address fails before anything runs
            host, port = self.config.metrics_address
            self.metrics_server = self.metrics.serve(host, port)
            self.log.info("metrics-listening", address=f"{host}:{self.metrics_server.port}")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        files = FileWatcher(self.config.roots, loop, self.emit)
        resync: asyncio.Task[None] | None = None
        try:
            for missing in files.start():
                self.log.warning("watch-missing-root", path=missing, note="watched once it appears")
            resync = asyncio.create_task(self._resync_loop(), name="resync")
            self.log.info("started", pid=os.getpid(), roots=",".join(self.config.roots),
                          resync=self.config.resync_interval, debounce=self.config.debounce.quiet)
            self.emit(Trigger(TriggerSource.STARTUP))
            while not self._stop.is_set():
                triggers = await self._next_triggers()
                if triggers is None:
                    break
                result = await self._run_pass(triggers)
                if result is not None:
                    self._after(result)
                for root in files.recheck():
                    self.log.info("watch-rearmed", path=root, note="the root was replaced")
        finally:
            if resync is not None:
                resync.cancel()
            if self._backoff_timer is not None:
                self._backoff_timer.cancel()
            files.stop()
            for task in await self._watchers.close():
                self.log.warning("watcher-stuck", task=task.get_name(), where=_where(task))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.hosts.close()
            self._write_status(None, stopped=True)
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.log.info("stopped", passes=self.reconciler.passes)
        return 0

    def stop(self) -> None:
        self._stop.set()

    # --- the loop's steps ---------------------------------------------------------------------------

    async def _next_triggers(self) -> list[Trigger] | None:
        gather = asyncio.create_task(collect(self._queue, self.config.debounce))
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({gather, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not gather.done():
            gather.cancel()
            return None
        return gather.result()

    async def _run_pass(self, triggers: Sequence[Trigger]) -> PassResult | None:
        for t in triggers:
            self.metrics.triggers.labels(source=t.source.value).inc()
        self.known.heard(triggers)
        self.known.last = None
        task = asyncio.create_task(self.reconciler.step(triggers), name="reconcile")
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            grace = self.config.shutdown_grace
            self.log.warning("stopping-during-pass", grace=grace, note="letting in-flight actions finish")
            abandon = asyncio.create_task(self._abandon.wait())
            await asyncio.wait({task, abandon}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            abandon.cancel()
            if not task.done():
                self.log.warning("abandoning-pass", note="in-flight actions cancelled; intents recover them")
                await self._cancel(task)
        self._acting.clear()
        if task.cancelled() or not task.done():
            self.known.doubt("a pass was cancelled")
            return None
        err = task.exception()
        if err is not None:  # a bug: log it and keep the daemon alive
            self.known.doubt("a pass crashed")
            self.metrics.reconciles.labels(result="error").inc()
            self.log.error("reconcile-crashed", error=f"{type(err).__name__}: {err}")
            return None
        result = task.result()
        if result.error is not None:
            self.known.doubt("the last pass failed")
        if self.known.last is not None:
            self.metrics.discoveries.labels(kind="full" if self.known.last.full else "partial").inc()
        return result

    async def _cancel(self, task: asyncio.Task[PassResult]) -> None:
        """Cancel the pass, again every second while it runs on: a safety net for code that swallows a
        cancellation (the package itself avoids Python 3.11's lossy asyncio.wait_for; a library may not)."""
        deadline = time.monotonic() + CANCEL_TIMEOUT
        while not task.done() and time.monotonic() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
            if not task.done():
                self.log.warning("pass-still-running", where=_where(task), note="cancelling again")

    def _after(self, result: PassResult) -> None:
        now = time.time()
        snap = result.snapshot
        self.metrics.reconciles.labels(result="ok" if result.ok else "error").inc()
        self.metrics.duration.observe(result.seconds)
        self.metrics.manifest_errors.set(len(snap.errors))
        self.metrics.pruning_suspended.set(1 if snap.degraded else 0)
        self.metrics.backoff.set(len(self.loops.holds(now)))
        self.metrics.set_revision(result.revision)
        if result.actual is not None:
            self._reach(result.actual.unreachable)
        self.metrics.nodes_unreachable.set(len(self._unreachable))
        if result.actual is not None:
            self.metrics.set_instances(i.state for i in result.actual.instances)
            self.metrics.set_instance_series(result.actual, snap.desired)
        for o in result.outcomes:
            self.metrics.actions.labels(kind=o.action.kind.value, outcome=o.word).inc()
        if result.ok:
            self._last_success = now
            self.metrics.last_success.set(now)
        self._write_status(result)  # before the log line, so whoever waits for that line reads this pass
        self._log_pass(result, now)
        if result.actual is not None:
            self._watch(result)
        self._arm_backoff_timer(now)
        if result.changed and self._followups < MAX_FOLLOWUPS:
            self._followups += 1
            self.emit(Trigger(TriggerSource.FOLLOWUP, f"after pass {result.number}"))
        elif not result.changed:
            self._followups = 0
        summary = _summary(result)
        if not self._ready:
            self._ready = True
            self.notifier.ready(summary)
            self.log.info("ready", status=summary)
        else:
            self.notifier.status(summary)

    def _watch(self, result: PassResult) -> None:
        from reconciler import layout

        assert result.actual is not None
        desired = result.snapshot.desired
        nodes = desired.nodes if desired is not None else {}
        live, crashed = [], []
        for inst in result.actual.instances:
            node = nodes.get(inst.node)
            if inst.pid is None or node is None:
                continue
            paths = layout.instance_paths(node, inst.name)
            watched = Watched(inst.name, inst.node, inst.pid, inst.started_at, paths.qmp_watch, paths.pidfile)
            if inst.state.has_process:
                live.append(watched)
            elif inst.state is RunState.CRASHED and inst.qmp_status is None:  # gone, not panicked
                crashed.append(watched)
        self._watchers.sync(live, crashed)

    def _arm_backoff_timer(self, now: float) -> None:
        if self._backoff_timer is not None:
            self._backoff_timer.cancel()
            self._backoff_timer = None
        expiry = self.loops.next_expiry(now)
        if expiry is not None:
            loop = asyncio.get_running_loop()
            self._backoff_timer = loop.call_later(
                expiry - now + 0.01, self.emit, Trigger(TriggerSource.BACKOFF, "a held restart is due"))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(jittered(self.config.resync_interval))  # a timer, not a poll
            self.emit(Trigger(TriggerSource.RESYNC))

    # --- callbacks ----------------------------------------------------------------------------------

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            self.log.warning("signal", signal=sig.name, note="second signal: abandoning in-flight actions")
            self._abandon.set()
            return
        self.log.info("signal", signal=sig.name, note="stopping; the VMs keep running")
        self.notifier.stopping(f"stopping on {sig.name}")
        self._stop.set()

    def _on_sighup(self) -> None:
        self.hosts.retry_rejected()  # the one way a host key rejected once is tried again
        self.emit(Trigger(TriggerSource.SIGHUP))

    def _looked_at(self) -> frozenset[str] | None:
        """The instances the pass's partial discovery looked at; None after a full one."""
        look = self.known.last
        return None if look is None or look.full else look.names

    def _applying(self, actions: Sequence[Action]) -> None:
        # A start does not explain an exit: the pass that restarts a crashed QEMU may begin before the
        # watcher has reported the crash, which must then still be logged and counted as one.
        self._acting = {a.name for a in actions if a.kind in _ACTS_ON_THE_PROCESS}
        for a in actions:  # whatever the outcome, look at them again next pass
            self.known.touched(a.name)

    def _observed(self, obs: Observation) -> None:
        """A watcher saw a guest stop or a QEMU exit. Those the daemon caused itself (a stop, a restart,
        a migration's source) are logged as such and not counted as exits."""
        ours = obs.name in self._acting
        if not ours:
            self.metrics.exits.labels(kind=obs.kind.value).inc()
        event = "qemu-exit" if obs.exited else "guest-stop"
        (self.log.debug if ours else self.log.info)(
            event, instance=obs.name, node=obs.node, pid=obs.pid, kind=obs.kind.value, detail=obs.detail,
            during_action=ours)

    def _reach(self, unreachable: Sequence[UnreachableNode]) -> None:
        """Log the nodes that became unreachable, and those reachable again, since the last pass."""
        now = {u.node: u for u in unreachable}
        for name, u in sorted(now.items()):
            if self._unreachable.get(name) != u:
                self.log.warning("node-unreachable", node=name, reach=u.reach.value, detail=u.detail,
                                 note="nothing is planned on it, nothing it may run is started elsewhere")
        for name in sorted(self._unreachable.keys() - now.keys()):
            self.log.info("node-reachable", node=name)
        self._unreachable = now

    def _lock_wait(self, path: str, holder: Holder | None) -> None:
        self.log.info("lock-wait", lock=path, holder=holder.describe() if holder else "another process")

    async def _git_revision(self) -> str | None:
        info = await asyncio.to_thread(gitinfo.describe, list(self.config.roots))
        return None if info is None else info.commit + ("-dirty" if info.dirty else "")

    # --- reporting ----------------------------------------------------------------------------------

    def _log_pass(self, result: PassResult, now: float) -> None:
        log = self.log
        current = {e.path: e.problems for e in result.snapshot.errors}
        for err in result.snapshot.errors:
            if self._shown_errors.get(err.path) != err.problems:
                for line in err.problems:
                    log.warning("manifest-error", path=err.path, held=err.held, problem=line)
        for path in self._shown_errors.keys() - current.keys():
            log.info("manifest-fixed", path=path)
        self._shown_errors = current
        plan_errors = tuple(e.message for e in result.plan.errors) if result.plan is not None else ()
        if plan_errors != self._shown_plan_errors:
            for msg in plan_errors:
                log.error("plan-error", error=msg, blocked=result.plan_blocked)
            self._shown_plan_errors = plan_errors
        held = result.plan.held if result.plan is not None else ()
        if held != self._shown_held:
            for h in held:
                if h not in self._shown_held:
                    log.warning("unreachable-held", instance=h.name, node=h.node, reason=h.reason)
            self._shown_held = held
        for hold in result.held:
            log.warning("restart-held", instance=hold.name, restarts=hold.restarts,
                        seconds_left=round(hold.remaining(now), 1), note="crash loop: backing off")
        for o in result.outcomes:
            a = o.action
            (log.info if o.ok else log.error)(
                "action", instance=a.name, kind=a.kind.value, reason=a.reason.value, node=a.node,
                outcome=o.word, seconds=round(o.seconds, 3), detail=o.detail)
        if result.error is not None:
            log.error("reconcile-failed", number=result.number, error=result.error)
        log.info("reconcile", number=result.number,
                 triggers=",".join(sorted({t.source.value for t in result.triggers})),
                 actions=len(result.outcomes), failed=sum(1 for o in result.outcomes if not o.ok),
                 held=len(result.held), manifest_errors=len(result.snapshot.errors),
                 reparsed=len(result.snapshot.reparsed), revision=result.revision,
                 discovery=self._look_word(result),
                 seconds=round(result.seconds, 3), ok=result.ok,
                 **{f"t_{phase}": round(sec, 3) for phase, sec in result.timings})

    def _look_word(self, result: PassResult) -> str:
        """How this pass discovered: "full (why)", the number of instances looked at, or "-" (none)."""
        look = self.known.last
        if result.actual is None or look is None:
            return "-"
        return f"full ({look.why})" if look.full else look.word

    def _write_status(self, result: PassResult | None, stopped: bool = False) -> None:
        desired = result.snapshot.desired if result is not None else None
        if desired is not None and self.config.status_file is None:
            nodes = [desired.nodes[n] for n in sorted(desired.nodes)]
            self._status_path = statusfile.default_path(nodes) or self._status_path
        if self._status_path is None:
            return
        now = time.time()
        status: statusfile.WatchStatus | None = None
        if result is not None:
            status = status_of(result, self.loops, self.reconciler.passes, self._last_success, now,
                               tuple(self._unreachable.values()))
        else:
            previous = statusfile.read(self._status_path)
            if previous is not None and previous.pid == os.getpid():
                status = replace(previous, stopped=stopped, updated_at=now)
        if status is None:
            return
        try:
            statusfile.write(self._status_path, status)
        except ReconcilerError as err:  # StateDirError: a status file must never stop reconciling
            self.log.warning("status-file-error", path=self._status_path, error=str(err))


def status_of(result: PassResult, loops: CrashLoops, passes: int, last_success: float | None,
              now: float, unreachable: Sequence[UnreachableNode] = ()) -> statusfile.WatchStatus:
    """What the state file says after `result` (pure)."""
    snap = result.snapshot
    return statusfile.WatchStatus(
        pid=os.getpid(), updated_at=now, passes=passes, last_success_at=last_success,
        revision=result.revision,
        manifest_errors=tuple(statusfile.BrokenFile(e.path, e.problems, e.held, e.since)
                              for e in snap.errors),
        pruning_suspended=snap.degraded,
        backoff=tuple(statusfile.HeldRestart(h.name, h.restarts, h.not_before) for h in loops.holds(now)),
        plan_errors=tuple(e.message for e in result.plan.errors) if result.plan is not None else (),
        failed_actions=tuple(f"{o.action.name}: {o.action.kind.value} {o.word}: {o.detail}"
                             for o in result.outcomes if not o.ok),
        last_error=result.error,
        unreachable=tuple(u.line for u in sorted(unreachable, key=lambda u: u.node)),
    )


def _raise_fd_limit() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _where(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended, innermost last, as one line (for a pass that ignores cancellation)."""
    names: list[str] = []
    coro: object = task.get_coro()
    while coro is not None and len(names) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            names.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(names[-8:]) or "?"


def _summary(result: PassResult) -> str:
    """The STATUS= line for systemd."""
    parts = [f"pass {result.number}"]
    if result.actual is not None:
        running = sum(1 for i in result.actual.instances if i.state.has_process)
        parts.append(f"{running} QEMU processes found")
    if result.outcomes:
        parts.append(f"{len(result.outcomes)} actions")
    if result.snapshot.errors:
        parts.append(f"{len(result.snapshot.errors)} broken manifest files (pruning suspended)")
    if result.held:
        parts.append(f"{len(result.held)} restarts held back (crash loop)")
    if result.actual is not None and result.actual.unreachable:
        parts.append(f"{len(result.actual.unreachable)} nodes unreachable")
    if result.error:
        parts.append(f"error: {result.error}")
    return "; ".join(parts)

