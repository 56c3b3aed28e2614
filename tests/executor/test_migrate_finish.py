"""After the source reports `completed`: the target is made to run. A pre-copy source does not wait for
the target, which may still be loading the stream's tail (`inmigrate`): it is told to start once loaded
(`cont` sets autostart there) and its RESUME awaited, rather than the move being failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reconciler.executor.context import Context, Deadlines
from reconciler.executor.migrate import _finish_target
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.progress import RecordingProgress

from .fakes import FakeSession


class Target:
    """A migration target QEMU as QMP shows it: `inmigrate` until it has loaded, then running."""

    name = "b"

    def __init__(self, *, loads: bool) -> None:
        self.status = "inmigrate"
        self.autostart = False
        self.loads = loads
        self.session = FakeSession({"query-status": lambda s, a: {"status": self.status},
                                    "cont": self._cont})

    def _cont(self, session: FakeSession, args: Any) -> dict[str, Any]:
        if self.status == "inmigrate":
            self.autostart = True  # QEMU's qmp_cont while inmigrate
            if self.loads:
                asyncio.get_running_loop().call_later(0.05, self._loaded)
        else:
            self.status = "running"
        return {}

    def _loaded(self) -> None:
        if self.autostart:
            self.status = "running"
            self.session.emit("RESUME")

    async def qmp(self, instance: str, timeout: float) -> FakeSession:
        return self.session


def ctx() -> Context:
    # launch: how long a target still loading is waited for (the default, 30 s, only makes this slow)
    return Context(nodes={}, specs={}, progress=RecordingProgress(), owner=(1, 0.0),
                   deadlines=Deadlines(qmp=0.5, launch=1.0))


def test_a_target_still_loading_runs_once_loaded() -> None:
    target = Target(loads=True)
    asyncio.run(_finish_target(ctx(), target, "web1", None))  # type: ignore[arg-type]
    assert target.status == "running"
    assert target.session.names == ["query-status", "cont", "query-status"]


def test_a_target_that_never_loads_fails_the_move() -> None:
    target = Target(loads=False)
    with pytest.raises(ActionFailed, match="migration completed but the target on b is inmigrate"):
        asyncio.run(_finish_target(ctx(), target, "web1", None))  # type: ignore[arg-type]
