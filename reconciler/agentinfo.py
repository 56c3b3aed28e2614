"""What `status` shows of a guest agent (guestAgent: true): whether it answers, and the guest's addresses.

Asked of each running instance whose applied record has the agent's channel, all at once, each with a
short deadline (an agent that does not answer is reported so, never waited on). The guest reports its
interfaces through `guest-network-get-interfaces`; loopback is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.node import Node
from reconciler.values import Value

TIMEOUT = 1.0


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class GuestInterface(Value):
    """One network interface as the guest agent reports it."""

    name: str
    mac: str
    addresses: tuple[str, ...]  # "10.0.2.15/24"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class AgentInfo(Value):
    """What the guest agent answered (its interfaces), or why it did not."""

    answers: bool
    interfaces: tuple[GuestInterface, ...] = ()
    detail: str = ""  # why it did not answer

    @property
    def words(self) -> str:
        """For the status table's detail column."""
        if not self.answers:
            return "agent: no answer"
        addresses = [a for i in self.interfaces for a in i.addresses]
        return "agent: " + (", ".join(addresses) if addresses else "answers (no address)")


def interfaces_of(answer: Any) -> tuple[GuestInterface, ...]:
    """guest-network-get-interfaces' answer, loopback left out. Pure."""
    out = []
    for item in answer if isinstance(answer, list) else ():
        if not isinstance(item, dict) or item.get("name") == "lo":
            continue
        addresses = tuple(f"{a.get('ip-address')}/{a.get('prefix')}" for a in item.get("ip-addresses") or ()
                          if isinstance(a, dict) and a.get("ip-address"))
        mac = str(item.get("hardware-address", ""))
        out.append(GuestInterface(str(item.get("name", "?")), mac, addresses))
    return tuple(out)


async def ask(node: Node, instance: str, timeout: float = TIMEOUT) -> AgentInfo:
    try:
        answer = await node.guest_agent(instance, "guest-network-get-interfaces", timeout)
    except ReconcilerError as err:
        return AgentInfo(False, detail=str(err))
    return AgentInfo(True, interfaces_of(answer))


async def ask_all(wanted: Sequence[tuple[Node, str]]) -> Mapping[tuple[str, str], AgentInfo]:
    """(node name, instance) -> what its agent says, all at once."""
    answers = await asyncio.gather(*(ask(node, name) for node, name in wanted))
    return {(node.name, name): a for (node, name), a in zip(wanted, answers, strict=True)}
