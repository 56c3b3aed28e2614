"""The exact QMP a migration sends before `migrate`: capabilities, parameters (no bandwidth cap unless the
spec sets one), `stop` for an offline migration, the URI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reconciler.executor.context import Context, Deadlines
from reconciler.executor.migrate import UNCAPPED, End, _run, parameters
from reconciler.executor.progress import RecordingProgress
from reconciler.model import InstanceSpec, Migration, MigrationMode, NodeSpec

from .fakes import FakeSession

INT64_MAX = 9223372036854775807


class FakeTarget:
    """The target node as `_run` sees it: its address, and a monitor for the post-copy capability."""

    def __init__(self) -> None:
        self.spec = NodeSpec("b", "/nonexistent", address="10.1.2.3")
        self.session = FakeSession()

    async def qmp(self, instance: str, timeout: float) -> FakeSession:
        return self.session


def caps(auto_converge: bool = False, post_copy: bool = False) -> tuple[str, dict[str, Any]]:
    return ("migrate-set-capabilities", {"capabilities": [
        {"capability": "events", "state": True},
        {"capability": "auto-converge", "state": auto_converge},
        {"capability": "postcopy-ram", "state": post_copy}]})


def run(settings: Migration) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]], Any]:
    ctx = Context(nodes={}, specs={}, progress=RecordingProgress(), owner=(1, 0.0),
                  deadlines=Deadlines(progress_report=0.05, cancel=1.0, qmp=0.5))
    src = FakeSession({"query-migrate": {"status": "completed"}})
    src.emit("MIGRATION", status="completed")
    target = FakeTarget()
    spec = InstanceSpec("web1", 128)

    async def go() -> Any:
        async with asyncio.timeout(10):
            return await _run(ctx, src, target, "web1", None, 49153, settings, spec,  # type: ignore[arg-type]
                              settings.mode is MigrationMode.OFFLINE)

    watched, _ = asyncio.run(go())
    assert watched.end is End.COMPLETED
    before = src.commands[:src.commands.index(("query-migrate", None))]
    return before, target.session.commands, watched


def test_uncapped_is_int64_max() -> None:
    assert UNCAPPED == INT64_MAX


@pytest.mark.parametrize(("settings", "expected"), [
    (Migration(), {"downtime-limit": 300, "max-bandwidth": INT64_MAX}),
    (Migration(max_bandwidth=0, max_downtime_ms=50), {"downtime-limit": 50, "max-bandwidth": INT64_MAX}),
    (Migration(max_bandwidth=4 << 20), {"downtime-limit": 300, "max-bandwidth": 4194304}),
    (Migration(max_bandwidth=1), {"downtime-limit": 300, "max-bandwidth": 1}),
])
def test_parameters(settings: Migration, expected: dict[str, int]) -> None:
    assert parameters(settings) == expected


def test_default_live_migration_is_not_capped() -> None:
    sent, on_target, _ = run(Migration())
    assert sent == [caps(),
                    ("migrate-set-parameters", {"downtime-limit": 300, "max-bandwidth": INT64_MAX}),
                    ("migrate", {"uri": "tcp:10.1.2.3:49153"})]
    assert on_target == []


def test_capped_offline_migration_with_postcopy() -> None:
    settings = Migration(mode=MigrationMode.OFFLINE, max_bandwidth=8 << 20, max_downtime_ms=1000,
                         auto_converge=True, post_copy=True)
    sent, on_target, _ = run(settings)
    assert sent == [caps(auto_converge=True, post_copy=True),
                    ("migrate-set-parameters", {"downtime-limit": 1000, "max-bandwidth": 8388608}),
                    ("stop", None),
                    ("migrate", {"uri": "tcp:10.1.2.3:49153"})]
    assert on_target == [("migrate-set-capabilities",
                          {"capabilities": [{"capability": "postcopy-ram", "state": True}]})]
