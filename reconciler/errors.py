"""Typed errors and the documented exit codes.

Every failure a user can cause or meet is a `ReconcilerError` subclass carrying its facts as fields;
`str()` renders the one line the CLI prints. Nothing else should reach the user as a traceback.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from reconciler.values import fields_repr


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    ERROR = 1  # invalid manifests, failed actions, runtime errors
    CHANGES = 2  # `plan --detailed-exitcode`: the plan is not empty
    STALE_PLAN = 3  # a saved plan no longer matches the world
    LOCKED = 4  # the node lock is held by someone else and we did not wait
    USAGE = 64  # bad command-line usage (EX_USAGE)
    INTERRUPTED = 130  # SIGINT


class ReconcilerError(Exception):
    """Base of every error the CLI reports as one line (after its `details` lines, if any).

    Subclasses that add fields are `@dataclass(eq=False, repr=False)`; one that only names a kind of
    failure (a QmpTimeout is a QmpError) adds none and inherits its parent's `__init__`. The dataclass
    methods are compiled at import, on every CLI start (~0.3 ms each), so the repr every error shares is
    this class's: the same text as a dataclass's, `QmpTimeout(socket='...', detail='...')`."""

    exit_code: ExitCode = ExitCode.ERROR

    @property
    def details(self) -> tuple[str, ...]:
        """Lines printed before the error line, each complete on its own (e.g. one per manifest problem)."""
        return ()

    def __repr__(self) -> str:
        return fields_repr(self)

    def __str__(self) -> str:  # subclasses are dataclasses with a `message` property
        msg = getattr(self, "message", None)
        return str(msg) if msg is not None else super().__str__()


@dataclass(eq=False, repr=False)
class UsageError(ReconcilerError):
    """The command line asks for something impossible (exit 64)."""

    detail: str
    exit_code = ExitCode.USAGE

    @property
    def message(self) -> str:
        return self.detail


@dataclass(eq=False, repr=False)
class ManifestLoadError(ReconcilerError):
    """Manifests could not be loaded or validated; `problems` holds one line each."""

    problems: tuple[str, ...]
    consequence: str = ""  # what did not happen, e.g. "no plan made"

    @property
    def details(self) -> tuple[str, ...]:
        return self.problems

    @property
    def message(self) -> str:
        n = len(self.problems)
        tail = f"; {self.consequence}" if self.consequence else ""
        return f"{n} problem{'s' if n != 1 else ''} found in the manifests{tail}"


@dataclass(eq=False, repr=False)
class ArgvError(ReconcilerError):
    """An instance spec cannot be turned into a safe QEMU command line."""

    instance: str
    field: str
    detail: str

    @property
    def message(self) -> str:
        return f"instance {self.instance}: {self.field}: {self.detail}"


@dataclass(eq=False, repr=False)
class SecretFileError(ReconcilerError):
    """A secret file (vnc.passwordFile) on a node is missing, unreadable, too open or empty."""

    field: str  # the manifest's field name, e.g. "vnc.passwordFile"
    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"{self.field} {self.path}: {self.detail}"


@dataclass(eq=False, repr=False)
class StateDirError(ReconcilerError):
    """A node's state directory (or a file in it) cannot be read or written."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"state directory {self.path}: {self.detail}"


@dataclass(eq=False, repr=False)
class InstanceNotFound(ReconcilerError):
    """An instance named on the command line is neither declared nor found on a node."""

    name: str

    @property
    def message(self) -> str:
        return f"instance {self.name}: not declared in the manifests and not found on any node"


@dataclass(eq=False, repr=False)
class RecordError(ReconcilerError):
    """An applied record (record.json) is missing, unreadable or of an unknown format."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"applied record {self.path}: {self.detail}"


@dataclass(eq=False, repr=False)
class QmpError(ReconcilerError):
    """Talking to a QEMU monitor (QMP) socket failed; subclasses say how."""

    socket: str
    detail: str

    @property
    def message(self) -> str:
        return f"QMP {self.socket}: {self.detail}"


class QmpConnectError(QmpError):
    """The socket is absent, refused the connection, or the greeting/negotiation failed."""


class QmpTimeout(QmpError):
    """No answer (connect, command or awaited event) before the deadline."""


@dataclass(eq=False, repr=False)
class QmpCommandError(QmpError):
    """QEMU answered a command with an error response."""

    command: str = ""
    error_class: str = ""

    @property
    def message(self) -> str:
        return f"QMP {self.socket}: {self.command}: {self.error_class}: {self.detail}"


class QmpDisconnected(QmpError):
    """The connection dropped (QEMU exited or closed the monitor) while we were using it."""


@dataclass(eq=False, repr=False)
class LaunchError(ReconcilerError):
    """QEMU did not start, or started but did not come up (no pidfile, no QMP answer)."""

    instance: str
    detail: str

    @property
    def message(self) -> str:
        return f"instance {self.instance}: failed to start QEMU: {self.detail}"


@dataclass(eq=False, repr=False)
class ProcessPinError(ReconcilerError):
    """A process could not be pinned (pidfd_open failed for another reason than its absence: too many
    open files, a kernel or tracer without pidfds). Whether it lives is then unknown, so nothing may
    act on it, and nothing may report it gone."""

    pid: int
    detail: str

    @property
    def message(self) -> str:
        return f"pid {self.pid} cannot be pinned (pidfd_open: {self.detail}); not touching it"


@dataclass(eq=False, repr=False)
class InstanceNotRunning(ReconcilerError):
    """A command that needs a running QEMU (console, qmp) named an instance that has none."""

    name: str
    state: str

    @property
    def message(self) -> str:
        return f"instance {self.name} is not running ({self.state})"


@dataclass(eq=False, repr=False)
class ConsoleError(ReconcilerError):
    """The serial console of an instance cannot be attached."""

    name: str
    detail: str

    @property
    def message(self) -> str:
        return f"console of instance {self.name}: {self.detail}"


@dataclass(eq=False, repr=False)
class NodeAddressError(ReconcilerError):
    """A node's `address` is not one of its host's: a migration target could not listen on it."""

    node: str
    address: str
    detail: str

    @property
    def message(self) -> str:
        return (f"node {self.node}: its address {self.address} is not an address of its host "
                f"({self.detail}); migration targets listen there: set the node's address to one of the "
                "host's")


@dataclass(eq=False, repr=False)
class RemoteHostError(ReconcilerError):
    """A remote node could not be used; subclasses say how. `host` is user@host:port."""

    node: str
    host: str
    detail: str

    @property
    def message(self) -> str:
        return f"node {self.node} ({self.host}): {self.detail}"


class HostUnreachable(RemoteHostError):
    """The connection was refused, timed out, or authentication failed: nothing is known of the host."""


class HostKeyRejected(RemoteHostError):
    """The host's key is not the one in known_hosts: a possible attack, never retried silently."""


class RemoteAgentError(RemoteHostError):
    """The host has no usable `reconciler agent`: missing, or another version than ours."""


@dataclass(eq=False, repr=False)
class RemoteCallError(RemoteHostError):
    """A request to the agent failed: no answer in time, the connection was lost, or it failed there."""

    method: str = ""

    @property
    def message(self) -> str:
        return f"node {self.node} ({self.host}): {self.method}: {self.detail}"
