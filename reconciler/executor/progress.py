"""Progress while an apply runs: one line per action event, and a percentage during migrations.

The executor reports through the `Progress` Protocol; the CLI prints lines (`LineProgress`), tests
collect them (`RecordingProgress`). Lines are prefixed with the instance name so parallel actions stay
readable when interleaved.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def event(self, instance: str, text: str) -> None:
        """One line about `instance` (e.g. "starting on node-a", "stopped (ACPI) in 1.2s")."""
        ...

    def percent(self, instance: str, text: str, percent: float) -> None:
        """A migration's progress; printed only when it moved by a visible step."""
        ...


class LineProgress:
    """Prints "<instance>: <text>" lines to a stream (stdout by default), flushed at once."""

    STEP = 5.0  # percent between migration progress lines

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def event(self, instance: str, text: str) -> None:
        self._write(f"{instance}: {text}")

    def percent(self, instance: str, text: str, percent: float) -> None:
        last = self._last.get(instance)
        if last is not None and percent - last < self.STEP and percent < 100.0:
            return
        self._last[instance] = percent
        self._write(f"{instance}: {text} {percent:.0f}%")

    def _write(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class RecordingProgress:
    """Collects lines (for tests)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def event(self, instance: str, text: str) -> None:
        self.lines.append(f"{instance}: {text}")

    def percent(self, instance: str, text: str, percent: float) -> None:
        self.lines.append(f"{instance}: {text} {percent:.0f}%")
