"""The agent protocol's framing (pure) and the agent's dispatch, table-driven with exact frames."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.remote import agent
from reconciler.remote import protocol as p

FRAMES = [
    (p.Hello(1, "0.1.0", "3.11.7"), b'{"hello":{"protocol":1,"version":"0.1.0","python":"3.11.7"}}\n'),
    (p.Request(7, "ping", {}), b'{"id":7,"method":"ping","params":{}}\n'),
    (p.Request(8, "read", {"path": "a,b=c\n"}), b'{"id":8,"method":"read","params":{"path":"a,b=c\\n"}}\n'),
    (p.Response(7, result={"pid": 1}), b'{"id":7,"result":{"pid":1}}\n'),
    (p.Response(9, result=None), b'{"id":9,"result":null}\n'),
    (p.Response(7, fault=p.Fault(p.FaultKind.FAILED, "no")),
     b'{"id":7,"error":{"kind":"failed","message":"no"}}\n'),
    (p.Event("exit", {"instance": "vm1"}), b'{"event":"exit","data":{"instance":"vm1"}}\n'),
]


@pytest.mark.parametrize(("frame", "line"), FRAMES)
def test_encode_decode_exact(frame: p.Frame, line: bytes) -> None:
    assert p.encode(frame) == line
    assert p.decode(line) == frame


@pytest.mark.parametrize(("line", "message"), [
    (b"hello\n", "not JSON: b'hello\\n'"),
    (b"[1]\n", "not a JSON object: b'[1]\\n'"),
    (b'{"id":"7","result":1}\n', "id: expected an integer"),
    (b'{"id":7,"method":"m","params":[1]}\n', "params: expected an object"),
    (b'{"id":7,"error":{"kind":"bogus","message":"x"}}\n', "malformed frame"),
    (b'{"hello":{"protocol":1}}\n', "malformed frame ('version')"),
])
def test_bad_frames_are_protocol_errors(line: bytes, message: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(line)
    assert str(info.value).startswith(message)


def test_dispatch_turns_every_failure_into_a_fault() -> None:
    async def boom(params: dict[str, object]) -> object:
        raise RuntimeError("bug")

    handlers = {**agent.HANDLERS, "boom": boom}

    async def go() -> list[p.Response]:
        return [await agent.handle(p.Request(1, "nope", {}), handlers),
                await agent.handle(p.Request(2, "qemu_version", {"binary": 3}), handlers),
                await agent.handle(p.Request(3, "boom", {}), handlers)]

    assert asyncio.run(go()) == [
        p.Response(1, fault=p.Fault(p.FaultKind.UNKNOWN_METHOD, "nope")),
        p.Response(2, fault=p.Fault(p.FaultKind.BAD_PARAMS, "qemu_version: binary: expected a string")),
        p.Response(3, fault=p.Fault(p.FaultKind.INTERNAL, "boom: RuntimeError: bug")),
    ]
