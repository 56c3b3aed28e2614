"""Log lines: exact text and JSON output, quoting, levels."""

from __future__ import annotations

import io
import json

import pytest

from reconciler.watch.logfmt import EventLog, Level, LogFormat, format_event, timestamp

T = 1714564800.1234  # 2024-05-01T12:00:00.123Z


def test_timestamp() -> None:
    assert timestamp(T) == "2024-05-01T12:00:00.123Z"
    assert timestamp(1714564800.9996) == "2024-05-01T12:00:01.000Z"


@pytest.mark.parametrize(("fields", "text"), [
    ({}, "2024-05-01T12:00:00.123Z info reconcile-done"),
    ({"pass": 3, "seconds": 0.4120, "ok": True}, "2024-05-01T12:00:00.123Z info reconcile-done pass=3 "
                                                 "seconds=0.412 ok=true"),
    ({"seconds": 2.0, "none": None}, "2024-05-01T12:00:00.123Z info reconcile-done seconds=2 none=-"),
    ({"error": 'a b="c"'}, '2024-05-01T12:00:00.123Z info reconcile-done error="a b=\\"c\\""'),
    ({"path": "m/a.yaml", "line": "x\ny"}, '2024-05-01T12:00:00.123Z info reconcile-done path=m/a.yaml '
                                           'line="x\\ny"'),
    ({"empty": ""}, '2024-05-01T12:00:00.123Z info reconcile-done empty=""'),
])
def test_text(fields: dict[str, object], text: str) -> None:
    assert format_event(T, Level.INFO, "reconcile-done", fields, LogFormat.TEXT) == text  # type: ignore[arg-type]


def test_json_is_one_object_per_line_with_fields_in_order() -> None:
    line = format_event(T, Level.WARNING, "manifest-error", {"path": "a.yaml", "held": True, "n": 2,
                                                             "event": "ignored"}, LogFormat.JSON)
    assert "\n" not in line
    assert line == ('{"ts": "2024-05-01T12:00:00.123Z", "level": "warning", "event": "manifest-error", '
                    '"path": "a.yaml", "held": true, "n": 2}')
    assert json.loads(line)["event"] == "manifest-error"


def test_event_log_filters_by_level() -> None:
    out = io.StringIO()
    log = EventLog(LogFormat.TEXT, Level.INFO, out)
    log.debug("hidden")
    log.info("shown", a=1)
    log.error("bad", why="x")
    lines = out.getvalue().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["info shown a=1", "error bad why=x"]
