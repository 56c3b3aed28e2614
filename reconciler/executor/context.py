"""What every action needs: the nodes, the desired specs, deadlines, progress, and who we are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.executor.outcome import ActionFailed
from reconciler.executor.progress import Progress
from reconciler.intent import Intent, IntentKind, owner_identity, to_jsonable
from reconciler.model import InstanceSpec
from reconciler.node import Node
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Deadlines(Value):
    """Seconds. The graceful-shutdown deadline is per instance (spec.shutdown_timeout)."""

    launch: float = 30.0  # QEMU up and QMP answering
    qmp: float = 5.0  # connect, or one command
    quit: float = 5.0  # `quit` -> process gone
    term: float = 3.0  # SIGTERM -> process gone
    kill: float = 5.0  # SIGKILL -> process gone (a zombie counts)
    cancel: float = 10.0  # migrate_cancel -> MIGRATION cancelled
    progress_report: float = 1.0  # how often a migration's percentage is refreshed
    unplug: float = 15.0  # `device_del` -> DEVICE_DELETED (the guest releases the disk or NIC)
    balloon: float = 15.0  # `balloon` -> BALLOON_CHANGE at the target (the guest moves it page by page)


@dataclass(slots=True)
class Context:
    """What every action of one run shares: the nodes, the desired specs, progress and options."""

    nodes: Mapping[str, Node]
    specs: Mapping[str, InstanceSpec]  # desired, by instance name
    progress: Progress
    revision: str | None = None
    force: bool = False  # stop without ACPI
    deadlines: Deadlines = field(default_factory=Deadlines)
    owner: tuple[int, float] = field(default_factory=owner_identity)
    outgoing_limit: int = 2  # concurrent outgoing migrations per node
    reserved_ports: dict[str, set[int]] = field(default_factory=dict)  # node -> ports we are binding
    _outgoing: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise ActionFailed(f"node {name} is not declared") from None

    def spec(self, name: str) -> InstanceSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise ActionFailed("not declared in the manifests") from None

    def outgoing(self, node: str) -> asyncio.Semaphore:
        sem = self._outgoing.get(node)
        if sem is None:
            sem = self._outgoing[node] = asyncio.Semaphore(self.outgoing_limit)
        return sem

    async def intent(self, kind: IntentKind, instance: str, node: Node, **kw: object) -> Intent:
        """Write an intent on `node` before acting (see reconciler.intent) and return it."""
        pid, ctime = self.owner
        it = Intent(kind=kind, instance=instance, node=node.name, time=time.time(), owner_pid=pid,
                    owner_create_time=ctime, revision=self.revision, **kw)  # type: ignore[arg-type]
        await node.write_intent(instance, to_jsonable(it))
        return it
