"""Prometheus metrics of the daemon (`watch --metrics-address HOST:PORT`).

A private `CollectorRegistry` (not the library's global one) so tests can build several daemons in one
process and read the figures back. Names follow Prometheus conventions (`_total` counters, `_seconds`
durations, `_timestamp_seconds`, `_info` for value-1 series that carry labels). The HTTP server is
prometheus-client's own thread.

    reconciler_build_info{version,python}              1: the daemon's own version and Python's
    reconciler_reconcile_total{result}                 passes, by ok / error
    reconciler_reconcile_duration_seconds              histogram of pass durations
    reconciler_actions_total{kind,outcome}             executor actions, by kind and done / failed / skipped
    reconciler_instances{state}                        instances by actual state (discovery), last pass
    reconciler_instance_info{instance,node,state,run_strategy}  1 per instance and node, last pass
    reconciler_instance_up{instance,node}              1 while its guest runs, else 0
    reconciler_manifest_errors                         manifest files broken now (last good version in use)
    reconciler_pruning_suspended                       1 while a broken file suspends pruning
    reconciler_crash_loop_backoff_instances            instances whose restart is held back now
    reconciler_triggers_total{source}                  what woke the daemon
    reconciler_discoveries_total{kind}                 discoveries by full (every instance) / partial
    reconciler_qemu_exits_total{kind}                  QEMU exits / guest stops seen by the watchers
    reconciler_last_success_timestamp_seconds          end of the last pass that completed without error
    reconciler_applied_revision_info{revision}         1 for the git revision of the manifests last applied

Counters start at 0 for every label value they can take, so `rate()` and `increase()` see the first
event. Label values never contain whitespace (`label_value`): `RunState.STALE` is `stale_pidfile` here.
Per-instance series of an instance that is gone (pruned, migrated away) are removed.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from reconciler import __version__
from reconciler.actual import ActualState, RunState
from reconciler.errors import ReconcilerError
from reconciler.executor.outcome import Status
from reconciler.model import DesiredState
from reconciler.planner import ActionKind
from reconciler.watch.triggers import ExitKind, TriggerSource

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RESULTS = ("ok", "error")
ABSENT = "absent"  # instance_info's state of a declared instance that has no record on any node


def label_value(value: str) -> str:
    """`value` with each run of whitespace made one `_` (a label value with a space is a trap in PromQL
    and in every line-based tool that reads the metrics page)."""
    return "_".join(value.split())


def state_label(state: RunState | str) -> str:
    return label_value(str(state))


# (instance, node, state, run_strategy) and (instance, node)
InfoKey = tuple[str, str, str, str]
UpKey = tuple[str, str]


def instance_series(actual: ActualState,
                    desired: DesiredState | None) -> tuple[set[InfoKey], dict[UpKey, int]]:
    """The per-instance series of a pass (pure): every discovered record, plus every declared instance
    that has none (state `absent`, on its declared node), so an alert can name a VM that never came up.
    `run_strategy` is the manifests' (empty for an instance that is no longer declared)."""
    specs = desired.instances if desired is not None else {}
    info: set[InfoKey] = set()
    up: dict[UpKey, int] = {}
    for inst in actual.instances:
        spec = specs.get(inst.name)
        strategy = spec.run_strategy.value if spec is not None else ""
        key = (label_value(inst.name), label_value(inst.node))
        info.add((*key, state_label(inst.state), strategy))
        up[key] = max(up.get(key, 0), 1 if inst.state is RunState.RUNNING else 0)
    for name in sorted(specs.keys() - {i.name for i in actual.instances}):
        spec = specs[name]
        key = (label_value(name), label_value(spec.node or ""))
        info.add((*key, ABSENT, spec.run_strategy.value))
        up.setdefault(key, 0)
    return info, up


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.build = Gauge("reconciler_build_info", "The daemon's version and Python's (value 1)",
                           ["version", "python"], registry=r)
        self.reconciles = Counter("reconciler_reconcile", "Reconcile passes by result", ["result"],
                                  registry=r)
        self.duration = Histogram("reconciler_reconcile_duration_seconds", "Duration of reconcile passes",
                                  buckets=BUCKETS, registry=r)
        self.actions = Counter("reconciler_actions", "Executor actions by kind and outcome",
                               ["kind", "outcome"], registry=r)
        self.instances = Gauge("reconciler_instances", "Instances by actual state at the last pass",
                               ["state"], registry=r)
        self.instance_info = Gauge(
            "reconciler_instance_info",
            "One series per instance and node at the last pass: its actual state (absent: declared, no "
            "record) and the manifests' run strategy (value 1)",
            ["instance", "node", "state", "run_strategy"], registry=r)
        self.instance_up = Gauge("reconciler_instance_up",
                                 "1 while the instance's QEMU runs its guest (state running), else 0",
                                 ["instance", "node"], registry=r)
        self.manifest_errors = Gauge("reconciler_manifest_errors",
                                     "Manifest files that are broken now (their last good version is used)",
                                     registry=r)
        self.pruning_suspended = Gauge("reconciler_pruning_suspended",
                                       "1 while pruning is suspended because a manifest file is broken",
                                       registry=r)
        self.backoff = Gauge("reconciler_crash_loop_backoff_instances",
                             "Instances whose automatic restart is held back by the crash-loop backoff",
                             registry=r)
        self.triggers = Counter("reconciler_triggers", "Triggers that woke the daemon, by source", ["source"],
                                registry=r)
        self.discoveries = Counter("reconciler_discoveries", "Discoveries: full (every instance and the "
                                   "host's processes) or partial (the instances touched since)", ["kind"],
                                   registry=r)
        self.exits = Counter("reconciler_qemu_exits", "QEMU exits and guest stops seen, by kind", ["kind"],
                             registry=r)
        self.nodes_unreachable = Gauge("reconciler_nodes_unreachable",
                                       "Nodes the last pass could not reach (nothing planned on them)",
                                       registry=r)
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "Time of the end of the last reconcile pass without errors", registry=r)
        self.revision = Gauge("reconciler_applied_revision_info",
                              "The git revision of the manifests last reconciled (value 1)", ["revision"],
                              registry=r)
        python = label_value(platform.python_version())
        self.build.labels(version=label_value(__version__), python=python).set(1)
        for result in RESULTS:
            self.reconciles.labels(result=result)
        for kind in ActionKind:
            if kind is not ActionKind.NOOP:  # never handed to the executor
                for status in Status:
                    self.actions.labels(kind=kind.value, outcome=status.value)
        for source in TriggerSource:
            self.triggers.labels(source=source.value)
        for look in ("full", "partial"):
            self.discoveries.labels(kind=look)
        for exit_kind in ExitKind:
            self.exits.labels(kind=exit_kind.value)
        for state in RunState:
            self.instances.labels(state=state_label(state)).set(0)
        self._revision: str | None = None
        self._info: set[InfoKey] = set()
        self._up: set[UpKey] = set()

    def set_instances(self, states: Iterable[RunState]) -> None:
        counts = dict.fromkeys(RunState, 0)
        for s in states:
            counts[s] += 1
        for state, n in counts.items():
            self.instances.labels(state=state_label(state)).set(n)

    def set_instance_series(self, actual: ActualState, desired: DesiredState | None) -> None:
        """Replace the per-instance series with those of this pass; series no longer true are removed."""
        info, up = instance_series(actual, desired)
        for key in self._info - info:
            self.instance_info.remove(*key)
        for key in info:
            self.instance_info.labels(*key).set(1)
        for up_key in self._up - up.keys():
            self.instance_up.remove(*up_key)
        for up_key, value in up.items():
            self.instance_up.labels(*up_key).set(value)
        self._info, self._up = info, set(up)

    def set_revision(self, revision: str | None) -> None:
        if revision is not None:
            revision = label_value(revision)
        if revision == self._revision:
            return
        if self._revision is not None:
            self.revision.remove(self._revision)
        if revision is not None:
            self.revision.labels(revision=revision).set(1)
        self._revision = revision

    def serve(self, host: str, port: int) -> MetricsServer:
        try:
            server, thread = start_http_server(port, host, registry=self.registry)
        except OSError as err:
            raise MetricsAddressError(f"{host}:{port}", err.strerror or str(err)) from None
        return MetricsServer(server, thread)


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class MetricsAddressError(ReconcilerError):
    """`--metrics-address` cannot be served (in use, not an address of this host, ...)."""

    address: str
    detail: str

    @property
    def message(self) -> str:
        return f"metrics address {self.address}: {self.detail}"


class MetricsServer:
    def __init__(self, server: object, thread: object) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])  # type: ignore[attr-defined]

    def close(self) -> None:
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]
