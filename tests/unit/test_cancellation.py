"""A cancellation (Ctrl-C, the daemon's shutdown) is never lost in a deadline wrapper.

Python 3.11's `asyncio.wait_for` returns the result instead of raising when the cancel lands in the loop
iteration where the awaited call completes; a Ctrl-C during `apply` once let a migration run to the end
that way. Each case completes the awaited call and cancels the caller in the same iteration, exactly that
window, and requires CancelledError."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from reconciler.qmp import QemuQmpSession


class _Client:
    """Just enough of qemu.qmp.QMPClient: `execute` and `events.get` wait on one future."""

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.events = self
        self._fut = fut

    async def execute(self, command: str, arguments: object = None) -> Any:
        return await self._fut

    async def get(self) -> Any:
        return await self._fut


async def _cancel_as_it_completes(call: Callable[[QemuQmpSession], Awaitable[Any]], result: Any) -> None:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    session = QemuQmpSession(cast(Any, _Client(fut)), "/run/x.sock")
    task = asyncio.ensure_future(call(session))
    for _ in range(3):
        await asyncio.sleep(0)  # the task is now waiting on fut
    fut.set_result(result)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("call", [
    pytest.param(lambda s: s.execute("query-status", timeout=5.0), id="execute"),
    pytest.param(lambda s: s.wait_event(["MIGRATION"], 5.0), id="wait_event"),
])
def test_qmp_never_drops_a_cancellation(call: Callable[[QemuQmpSession], Awaitable[Any]]) -> None:
    asyncio.run(_cancel_as_it_completes(call, {"event": "MIGRATION", "data": {}, "status": "running"}))


def _wait_for_calls(source: str) -> list[int]:
    import ast

    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "wait_for" and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "asyncio"]


def test_the_scan_finds_wait_for() -> None:
    assert _wait_for_calls("import asyncio\nasync def f(x):\n    await asyncio.wait_for(x, 1)\n") == [3]


def test_no_asyncio_wait_for_in_the_package() -> None:
    from pathlib import Path

    import reconciler

    root = Path(reconciler.__file__).parent
    found = {str(p.relative_to(root)): lines for p in sorted(root.rglob("*.py"))
             if (lines := _wait_for_calls(p.read_text(encoding="utf-8")))}
    assert found == {}, "use asyncio.timeout (see reconciler/qmp.py)"
