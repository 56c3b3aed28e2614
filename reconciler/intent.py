"""Intents: what an unfinished action was about to do, written BEFORE it touches a process.

A QEMU launched by an apply that is SIGKILLed before writing the applied record would otherwise look
unmanaged, and the next apply would start a second QEMU on the same disks. So every action first writes
intent.json in the instance directory (atomically): the action, the nodes, for a launch the exact argv
(which contains the instance's unique pidfile path) and spec, the time, and the writer's PID and start
time. Discovery adopts a live process whose command line is exactly the intent's argv and which started
no earlier than the intent (minus a second of clock slack), writing its record; an intent whose writer
and process are both gone is stale and cleaned. The action removes its intent when it ends.

It lives below the executor because discovery reads intents too. Encoding and decoding are pure; the
owner checks ask /proc (reconciler.procs) about processes of this machine.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any

from reconciler import model, records
from reconciler.values import Value

FORMAT_VERSION = 1
ADOPT_SLACK = 1.0  # seconds: a process may look started slightly before the intent's clock reading


class IntentKind(enum.StrEnum):
    START = "start"  # launching a new QEMU (start, restart, relocation)
    STOP = "stop"
    RESET = "reset"  # in-place restart: system_reset + cont of the same process
    UPDATE = "update"  # rewriting the applied record only (no process is touched)
    MIGRATE_SOURCE = "migrate-source"
    MIGRATE_TARGET = "migrate-target"  # launching an -incoming target


class IntentError(ValueError):
    """intent.json does not decode; the message names the field."""


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Intent(Value):
    """An action a run is about to carry out, written down before it acts."""

    kind: IntentKind
    instance: str
    node: str  # the node whose directory holds this intent
    time: float  # epoch seconds, written before acting
    owner_pid: int  # the apply (or daemon) that wrote it
    owner_create_time: float
    argv: tuple[str, ...] = ()  # START / MIGRATE_TARGET: exactly what is launched
    spec: model.InstanceSpec | None = None  # START / MIGRATE_TARGET: what the record will say
    revision: str | None = None
    peer_node: str | None = None  # the other end of a migration
    paused_source: bool = False  # MIGRATE_SOURCE: we paused the source (offline migration)

    def matches(self, cmdline: tuple[str, ...], create_time: float) -> bool:
        """Whether a live process is the one this intent launched."""
        return bool(self.argv) and cmdline == self.argv and create_time >= self.time - ADOPT_SLACK


def to_jsonable(intent: Intent) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kind": intent.kind.value,
        "instance": intent.instance,
        "node": intent.node,
        "time": intent.time,
        "owner_pid": intent.owner_pid,
        "owner_create_time": intent.owner_create_time,
        "argv": list(intent.argv),
        "spec": model.to_jsonable(intent.spec) if intent.spec is not None else None,
        "revision": intent.revision,
        "peer_node": intent.peer_node,
        "paused_source": intent.paused_source,
    }


def from_jsonable(data: object) -> Intent:
    if not isinstance(data, dict):
        raise IntentError("not a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise IntentError(f"unsupported format_version {data.get('format_version')!r}")
    try:
        argv = data.get("argv") or []
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise IntentError("argv: expected a list of strings")
        spec = data.get("spec")
        return Intent(
            kind=IntentKind(data["kind"]),
            instance=str(data["instance"]),
            node=str(data["node"]),
            time=float(data["time"]),
            owner_pid=int(data["owner_pid"]),
            owner_create_time=float(data["owner_create_time"]),
            argv=tuple(argv),
            spec=records.instance_from_jsonable(spec) if spec is not None else None,
            revision=data.get("revision"),
            peer_node=data.get("peer_node"),
            paused_source=bool(data.get("paused_source", False)),
        )
    except KeyError as err:
        raise IntentError(f"missing field {err.args[0]}") from None
    except (ValueError, TypeError, records.DecodeError) as err:
        raise IntentError(str(err)) from None


def owner_identity() -> tuple[int, float]:
    """This process's PID and start time (procs.create_time), to tell a live writer from a reused PID."""
    from reconciler import procs

    pid = os.getpid()
    return pid, procs.create_time(pid)


def owner_alive(intent: Intent) -> bool:
    """Whether the process that wrote `intent` still runs (a reused PID does not count)."""
    from reconciler import procs

    try:
        st = procs.stat(intent.owner_pid)
    except (procs.NoSuchProcess, procs.AccessDenied):
        return False
    return not st.zombie and abs(st.create_time - intent.owner_create_time) <= procs.CREATE_TIME_TOLERANCE
