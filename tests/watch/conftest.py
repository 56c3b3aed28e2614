"""Fixtures of the watch daemon's end-to-end tests: a world of nodes booting the test guest, and the
daemons a test starts, stopped before that world is reaped."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest
from executor.kit import World, make_world

from .daemon_kit import Daemon


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons started by a test; stopped (SIGTERM, then SIGKILL) before the world is reaped."""
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.terminate()
            try:
                d.proc.wait(20)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(10)
        d.close()
