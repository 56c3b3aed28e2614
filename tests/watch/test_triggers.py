"""Triggers: which paths count, the real file watcher (inotify via watchdog) including a root replaced by a
symlink swap, exit classification from QMP events, jitter."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from reconciler.qmp import QmpEvent
from reconciler.watch.triggers import (
    ExitKind,
    FileWatcher,
    Trigger,
    TriggerSource,
    classify_exit,
    jittered,
    relevant_path,
)


@pytest.mark.parametrize(("path", "relevant"), [
    ("/m/a.yaml", True), ("/m/sub/b.yml", True), ("/m/sub", True), ("/m", True),
    ("/m/.git/index", False), ("/m/.a.yaml.swp", False), ("/m/sub/.hidden/c.yaml", False),
    ("/m/README.md", False), ("/m/a.yaml~", False), ("/m/.tmp123", False),
])
def test_relevant_path(path: str, relevant: bool) -> None:
    assert relevant_path(path, "/m") is relevant


def ev(name: str, **data: object) -> QmpEvent:
    return QmpEvent(name, data)


@pytest.mark.parametrize(("events", "kind"), [
    ([], ExitKind.CRASH),
    ([ev("STOP")], ExitKind.CRASH),
    ([ev("SHUTDOWN", guest=True, reason="guest-shutdown"), ev("STOP")], ExitKind.GUEST_POWEROFF),
    ([ev("SHUTDOWN", guest=False, reason="host-qmp-quit")], ExitKind.HOST_STOP),
    ([ev("GUEST_PANICKED")], ExitKind.PANIC),
    # powered off, restarted in place (RESET + RESUME), then killed: a crash, not a power-off
    ([ev("SHUTDOWN", guest=True, reason="guest-shutdown"), ev("RESET"), ev("RESUME")], ExitKind.CRASH),
])
def test_classify_exit(events: list[QmpEvent], kind: ExitKind) -> None:
    assert classify_exit(events)[0] is kind


@pytest.mark.parametrize(("events", "pidfile_left", "expected"), [
    # No event seen (the watcher was not connected yet): the pidfile tells a SIGTERM from a SIGKILL.
    ([], False, (ExitKind.HOST_STOP, "exited cleanly (pidfile removed) without a SHUTDOWN event seen")),
    ([], True, (ExitKind.CRASH, "exited without a SHUTDOWN event")),
    ([], None, (ExitKind.CRASH, "exited without a SHUTDOWN event")),
    ([ev("SHUTDOWN", guest=False, reason="host-signal")], False,
     (ExitKind.HOST_STOP, "SHUTDOWN by the host (host-signal)")),
    ([ev("GUEST_PANICKED")], False, (ExitKind.PANIC, "GUEST_PANICKED")),
])
def test_classify_exit_with_the_pidfile(events: list[QmpEvent], pidfile_left: bool | None,
                                        expected: tuple[ExitKind, str]) -> None:
    assert classify_exit(events, pidfile_left) == expected


def test_jitter_stays_within_ten_percent() -> None:
    rng = random.Random(7)
    values = [jittered(60.0, 0.1, rng) for _ in range(200)]
    assert min(values) >= 54.0 and max(values) <= 66.0 and len(set(values)) > 100


async def _next_file_trigger(q: asyncio.Queue[Trigger], timeout: float = 5.0) -> Trigger:
    t = await asyncio.wait_for(q.get(), timeout)
    assert t.source is TriggerSource.FILE
    return t


async def _until(q: asyncio.Queue[Trigger], needle: str, timeout: float = 5.0) -> Trigger:
    """The first FILE trigger mentioning `needle` (earlier ones, e.g. the directory's creation, skipped)."""
    async def look() -> Trigger:
        while needle not in (t := await _next_file_trigger(q, timeout)).detail:
            pass
        return t

    return await asyncio.wait_for(look(), timeout)


async def _quiet(q: asyncio.Queue[Trigger], seconds: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(q.get(), seconds)
    except TimeoutError:
        return True
    return False


def test_file_watcher_reports_yaml_changes_only(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()

    async def main() -> None:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        w = FileWatcher([str(root)], asyncio.get_running_loop(), q.put_nowait)
        assert w.start() == []
        try:
            (root / ".swap").write_text("x")
            (root / "notes.txt").write_text("x")
            assert await _quiet(q)
            (root / "a.yaml").write_text("x")
            await _until(q, "a.yaml")
        finally:
            w.stop()

    asyncio.run(main())


def test_file_watcher_rearms_a_replaced_root(tmp_path: Path) -> None:
    """The deploy pattern `ln -sfn release-2 current`: the watch follows the new target after recheck."""
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "r1")

    async def main() -> None:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        w = FileWatcher([str(current)], asyncio.get_running_loop(), q.put_nowait)
        w.start()
        try:
            assert w.recheck() == []
            tmp_link = tmp_path / "current.new"
            tmp_link.symlink_to(tmp_path / "r2")
            os.replace(tmp_link, current)
            assert w.recheck() == [str(current)]
            assert "re-armed" in (await _next_file_trigger(q)).detail
            (tmp_path / "r2" / "b.yaml").write_text("x")
            await _until(q, "b.yaml")
        finally:
            w.stop()

    asyncio.run(main())


def test_missing_root_is_armed_when_it_appears(tmp_path: Path) -> None:
    root = tmp_path / "later"

    async def main() -> None:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        w = FileWatcher([str(root)], asyncio.get_running_loop(), q.put_nowait)
        assert w.start() == [str(root)]
        try:
            root.mkdir()
            assert w.recheck() == [str(root)]
            await _next_file_trigger(q)
            (root / "c.yaml").write_text("x")
            await _until(q, "c.yaml")
        finally:
            w.stop()

    asyncio.run(main())
