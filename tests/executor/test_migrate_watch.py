"""Following a migration: completion, failure, cancel on the completion or no-progress timeout, post-copy."""

from __future__ import annotations

import asyncio
from typing import Any

from reconciler.executor.context import Context, Deadlines
from reconciler.executor.migrate import End, migrate_uri, percent, watch
from reconciler.executor.progress import RecordingProgress
from reconciler.model import Migration

from .fakes import FakeSession


def ctx() -> Context:
    return Context(nodes={}, specs={}, progress=RecordingProgress(), owner=(1, 0.0),
                   deadlines=Deadlines(progress_report=0.05, cancel=1.0, qmp=0.5))


def ram(total: int, remaining: int, status: str = "active") -> dict[str, Any]:
    sent = total - remaining
    return {"status": status, "ram": {"total": total, "remaining": remaining, "transferred": sent}}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_completed() -> None:
    async def go() -> Any:
        s = FakeSession({"query-migrate": {"status": "completed", "downtime": 12}})
        s.emit("MIGRATION", status="completed")
        return await watch(ctx(), s, "web1", Migration(), 128)

    w = run(go())
    assert w.end is End.COMPLETED and w.info["downtime"] == 12


def test_failed_carries_qemu_error() -> None:
    async def go() -> Any:
        s = FakeSession({"query-migrate": {"status": "failed", "error-desc": "Connection reset"}})
        return await watch(ctx(), s, "web1", Migration(), 128)

    w = run(go())
    assert (w.end, w.detail) == (End.FAILED, "Connection reset")


def test_completion_timeout_cancels() -> None:
    c = ctx()

    async def go() -> tuple[Any, FakeSession]:
        left = iter(range(1000, 0, -1))
        s = FakeSession({
            "query-migrate": lambda s, a: ram(1000, next(left)),
            "migrate_cancel": lambda s, a: s.emit("MIGRATION", status="cancelled"),
        })
        settings = Migration(completion_timeout_per_gib=0.2)  # 0.2 s for a 128 MiB guest
        return await watch(c, s, "web1", settings, 128), s

    w, s = run(go())
    assert w.end is End.CANCELLED and "not completed within 0.2s" in w.detail
    assert s.names[-1] == "migrate_cancel"
    assert any("%" in ln for ln in c.progress.lines)  # type: ignore[attr-defined]


def test_no_progress_cancels() -> None:
    async def go() -> tuple[Any, FakeSession]:
        s = FakeSession({
            "query-migrate": ram(1000, 500),  # never decreases
            "migrate_cancel": lambda s, a: s.emit("MIGRATION", status="cancelled"),
        })
        return await watch(ctx(), s, "web1", Migration(progress_timeout=0.2), 128), s

    w, _s = run(go())
    assert w.end is End.CANCELLED and "no progress for 0.2s" in w.detail


def test_post_copy_instead_of_cancel() -> None:
    async def go() -> tuple[Any, FakeSession]:
        state = {"postcopy": False, "polls": 0}

        def query(s: FakeSession, a: object) -> dict[str, Any]:
            if state["postcopy"]:
                state["polls"] += 1
                return {"status": "completed"} if state["polls"] > 2 else ram(1000, 100, "postcopy-active")
            return ram(1000, 500)

        def start_postcopy(s: FakeSession, a: object) -> None:
            state["postcopy"] = True

        s = FakeSession({"query-migrate": query, "migrate-start-postcopy": start_postcopy})
        settings = Migration(progress_timeout=0.2, post_copy=True)
        return await watch(ctx(), s, "web1", settings, 128), s

    w, s = run(go())
    assert w.end is End.COMPLETED
    assert "migrate-start-postcopy" in s.names and "migrate_cancel" not in s.names


def test_percent_and_uri() -> None:
    assert percent(ram(200, 50)) == 75.0
    assert percent({"status": "setup"}) is None
    assert migrate_uri("127.0.0.1", 49152) == "tcp:127.0.0.1:49152"
    assert migrate_uri("::1", 49152) == "tcp:[::1]:49152"
