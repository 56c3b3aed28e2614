"""A client of qemu-guest-agent, on the instance's own agent socket (guestAgent: true; issue 14).

QEMU serves the virtio-serial channel on a unix socket in the instance's state directory; whatever the
guest's agent wrote earlier may still be buffered, so each exchange starts with `guest-sync` and a fresh
id, and answers before that id's are dropped. `guest-shutdown` answers nothing when it works (the guest
powers off instead): it is sent and not waited on. Every exchange has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from reconciler.errors import ReconcilerError

NO_ANSWER = frozenset({"guest-shutdown"})  # commands that answer nothing on success


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class GuestAgentError(ReconcilerError):
    """The guest agent did not answer as expected."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"guest agent {self.path}: {self.detail}"


async def call(path: str, command: str, timeout: float, arguments: dict[str, Any] | None = None) -> Any:
    """Run `command` through the agent at `path`; its `return` value (None for NO_ANSWER commands)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                ident = secrets.randbelow(1 << 31)
                await _send(writer, {"execute": "guest-sync", "arguments": {"id": ident}})
                while (await _answer(reader, path)).get("return") != ident:
                    pass  # an answer left over from an earlier client
                request: dict[str, Any] = {"execute": command}
                if arguments is not None:
                    request["arguments"] = arguments
                await _send(writer, request)
                if command in NO_ANSWER:
                    return None
                answer = await _answer(reader, path)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise GuestAgentError(path, f"{command}: no answer within {timeout:g}s") from None
    except OSError as err:
        raise GuestAgentError(path, f"{command}: {err.strerror or err}") from None
    if "error" in answer:
        raise GuestAgentError(path, f"{command}: {answer['error'].get('desc', answer['error'])}")
    return answer.get("return")


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def _answer(reader: asyncio.StreamReader, path: str) -> dict[str, Any]:
    while True:
        line = await reader.readline()
        if not line:
            raise GuestAgentError(path, "the channel closed")
        with contextlib.suppress(ValueError):
            answer = json.loads(line.strip(b"\xff \r\n"))
            if isinstance(answer, dict):
                return answer
