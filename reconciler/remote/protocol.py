"""The agent protocol: one JSON object per line, over the stdio of one SSH channel.

Why a protocol of our own and not a remote shell: manifest data must never reach a shell, and one
long-lived agent per host avoids paying an interpreter start-up per operation (as Mitogen does). Argv,
paths and records cross as JSON values; the only command line sent over SSH is the fixed agent command.

Frames:
- the agent's first line: `{"hello": {"protocol": 1, "version": "0.1.0", "python": "3.11.7"}}`;
- a request: `{"id": 7, "method": "ping", "params": {...}}`;
- its answer: `{"id": 7, "result": ...}` or `{"id": 7, "error": {"kind": "...", "message": "..."}}`;
- an event the host pushes (no id): `{"event": "exit", "data": {...}}`.

Pure: encode and decode only.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from reconciler.values import Value

PROTOCOL = 1
HEARTBEAT = 5.0  # seconds between the controller's pings on an open link
HEARTBEAT_DEADLINE = 10.0  # a ping unanswered this long: the link is lost (its calls fail)
SILENCE = 30.0  # the agent hears nothing this long (not even a ping): the controller is gone, it ends
MAX_FRAME = 64 * 1024 * 1024  # a discovery of thousands of instances fits; a runaway peer does not


class FaultKind(enum.StrEnum):
    """Why a request failed on the host: the controller maps each to a typed error."""

    UNKNOWN_METHOD = "unknown_method"
    BAD_PARAMS = "bad_params"
    FAILED = "failed"  # the operation raised a ReconcilerError (its one line is the message)
    INTERNAL = "internal"  # anything else: a bug of the agent's


class ProtocolError(ValueError):
    """A frame that does not decode: the peer is not our agent, or not this protocol."""


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Hello(Value):
    """The remote agent's greeting."""

    protocol: int
    version: str
    python: str


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Request(Value):
    """One call to the remote agent."""

    id: int
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Fault(Value):
    """Why a remote call failed."""

    kind: FaultKind
    message: str


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Response(Value):
    """The answer to one remote call."""

    id: int
    result: Any = None
    fault: Fault | None = None


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Event(Value):
    """Something the remote agent reports unasked."""

    name: str
    data: dict[str, Any]


Frame = Hello | Request | Response | Event


def encode(frame: Frame) -> bytes:
    match frame:
        case Hello():
            obj: dict[str, Any] = {"hello": {"protocol": frame.protocol, "version": frame.version,
                                             "python": frame.python}}
        case Request():
            obj = {"id": frame.id, "method": frame.method, "params": frame.params}
        case Response(fault=None):
            obj = {"id": frame.id, "result": frame.result}
        case Response(fault=Fault() as fault):
            obj = {"id": frame.id, "error": {"kind": fault.kind.value, "message": fault.message}}
        case Event():
            obj = {"event": frame.name, "data": frame.data}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Frame:
    """One frame from one line; ProtocolError names what is wrong."""
    if len(line) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(line)} bytes exceeds {MAX_FRAME}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"not JSON: {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a JSON object: {line[:80]!r}")
    try:
        if "hello" in obj:
            h = obj["hello"]
            return Hello(int(h["protocol"]), str(h["version"]), str(h["python"]))
        if "event" in obj:
            return Event(str(obj["event"]), dict(obj.get("data") or {}))
        ident = obj["id"]
        if not isinstance(ident, int):
            raise ProtocolError("id: expected an integer")
        if "method" in obj:
            params = obj.get("params") or {}
            if not isinstance(params, dict):
                raise ProtocolError("params: expected an object")
            return Request(ident, str(obj["method"]), params)
        if "error" in obj:
            err = obj["error"]
            return Response(ident, fault=Fault(FaultKind(err["kind"]), str(err["message"])))
        return Response(ident, result=obj.get("result"))
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise ProtocolError(f"malformed frame ({err}): {line[:80]!r}") from None
