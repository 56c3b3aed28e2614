"""Prometheus metrics of the daemon (`watch --metrics-address HOST:PORT`).

A private `CollectorRegistry` (not the library's global one) so tests can build several daemons in one
process and read the figures back. Names follow Prometheus conventions (`_total` counters, `_seconds`
durations, `_timestamp_seconds`). The HTTP server is prometheus-client's own thread.

    reconciler_reconcile_total{result}                 passes, by ok / error
    reconciler_reconcile_duration_seconds              histogram of pass durations
    reconciler_actions_total{kind,outcome}             executor actions, by kind and done / failed / skipped
    reconciler_instances{state}                        instances by actual state (discovery), last pass
    reconciler_manifest_errors                         manifest files broken now (last good version in use)
    reconciler_pruning_suspended                       1 while a broken file suspends pruning
    reconciler_crash_loop_backoff_instances            instances whose restart is held back now
    reconciler_triggers_total{source}                  what woke the daemon
    reconciler_qemu_exits_total{kind}                  QEMU exits / guest stops seen by the watchers
    reconciler_last_success_timestamp_seconds          end of the last pass that completed without error
    reconciler_applied_revision_info{revision}         1 for the git revision of the manifests last applied
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from reconciler.actual import RunState
from reconciler.errors import ReconcilerError

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reconciles = Counter("reconciler_reconcile", "Reconcile passes by result", ["result"],
                                  registry=r)
        self.duration = Histogram("reconciler_reconcile_duration_seconds", "Duration of reconcile passes",
                                  buckets=BUCKETS, registry=r)
        self.actions = Counter("reconciler_actions", "Executor actions by kind and outcome",
                               ["kind", "outcome"], registry=r)
        self.instances = Gauge("reconciler_instances", "Instances by actual state at the last pass",
                               ["state"], registry=r)
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
        self.exits = Counter("reconciler_qemu_exits", "QEMU exits and guest stops seen, by kind", ["kind"],
                             registry=r)
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "Time of the end of the last reconcile pass without errors", registry=r)
        self.revision = Gauge("reconciler_applied_revision_info",
                              "The git revision of the manifests last reconciled (value 1)", ["revision"],
                              registry=r)
        for state in RunState:
            self.instances.labels(state=state.value).set(0)
        self._revision: str | None = None

    def set_instances(self, states: Iterable[RunState]) -> None:
        counts = dict.fromkeys(RunState, 0)
        for s in states:
            counts[s] += 1
        for state, n in counts.items():
            self.instances.labels(state=state.value).set(n)

    def set_revision(self, revision: str | None) -> None:
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


@dataclass(eq=False)
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
