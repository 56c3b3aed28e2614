"""One line per event: what the daemon logs, as logfmt-style text or as JSON.

The daemon runs under systemd (journald) or a container runtime; both want one self-contained line per
event, greppable by its event name and fields. `format_event` is pure (time, level, event, fields ->
line) and tested for exact output; `EventLog` writes lines to a stream with a lock (the metrics server
and the watchdog observer are threads).

Text:  2024-05-01T12:00:00.123Z info reconcile-done pass=3 actions=1 seconds=0.412
JSON:  {"ts": "2024-05-01T12:00:00.123Z", "level": "info", "event": "reconcile-done", "pass": 3, ...}
"""

from __future__ import annotations

import enum
import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

FieldValue = str | int | float | bool | None


class Level(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


_ORDER = {Level.DEBUG: 0, Level.INFO: 1, Level.WARNING: 2, Level.ERROR: 3}


def timestamp(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds."""
    whole = int(epoch)
    ms = round((epoch - whole) * 1000)
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def _text_value(value: FieldValue) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "NaN"
    text = str(value)
    if text and all(c.isprintable() and c not in ' "=' for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def format_event(epoch: float, level: Level, event: str, fields: Mapping[str, FieldValue],
                 fmt: LogFormat) -> str:
    """The one line for an event (no trailing newline). Field order is kept as given."""
    if fmt is LogFormat.JSON:
        doc: dict[str, FieldValue] = {"ts": timestamp(epoch), "level": level.value, "event": event}
        doc.update({k: v for k, v in fields.items() if k not in doc})
        return json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))
    parts = [timestamp(epoch), level.value, event]
    parts += [f"{k}={_text_value(v)}" for k, v in fields.items()]
    return " ".join(parts)


@dataclass(eq=False)
class EventLog:
    """Writes event lines to `stream` (stderr by default), at `level` and above."""

    fmt: LogFormat = LogFormat.TEXT
    level: Level = Level.INFO
    stream: TextIO | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def log(self, level: Level, event: str, **fields: FieldValue) -> None:
        if _ORDER[level] < _ORDER[self.level]:
            return
        line = format_event(time.time(), level, event, fields, self.fmt)
        out = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            out.write(line + "\n")
            out.flush()

    def debug(self, event: str, **fields: FieldValue) -> None:
        self.log(Level.DEBUG, event, **fields)

    def info(self, event: str, **fields: FieldValue) -> None:
        self.log(Level.INFO, event, **fields)

    def warning(self, event: str, **fields: FieldValue) -> None:
        self.log(Level.WARNING, event, **fields)

    def error(self, event: str, **fields: FieldValue) -> None:
        self.log(Level.ERROR, event, **fields)
