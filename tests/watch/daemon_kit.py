"""Running the real daemon as a subprocess in tests: JSON log events read by a thread, waited for with
deadlines (a queue, no polling), the metrics endpoint, and a clean stop."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Event = dict[str, Any]
EVENT_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class Daemon:
    """`reconciler watch <manifests> --log-format json ...` as a child; `.events` is everything logged."""

    def __init__(self, manifests: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "reconciler", "watch", str(manifests), "--log-format", "json",
                "--metrics-address", "127.0.0.1:0", "--resync", "30", *extra]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.events: list[Event] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._seen = 0  # events before this index were looked at by a wait
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.metrics_url: str | None = None

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip("\n")}
            self._queue.put(event)
        self._queue.put(None)

    def _next(self, deadline: float) -> Event | None:
        while self._seen >= len(self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if item is None:
                raise AssertionError("the daemon's output ended:\n" + self.transcript())
            self.events.append(item)
        self._seen += 1
        return self.events[self._seen - 1]

    def wait(self, event: str, timeout: float = EVENT_TIMEOUT, where: Callable[[Event], bool] | None = None,
             **fields: Any) -> Event:
        """The next event named `event` whose fields match (and `where` holds); earlier ones are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._next(deadline)
            if item is None:
                raise AssertionError(f"no {event} {fields} within {timeout}s; log:\n" + self.transcript())
            if item.get("event") == event and all(item.get(k) == v for k, v in fields.items()) and (
                    where is None or where(item)):
                if event == "metrics-listening":
                    self.metrics_url = f"http://{item['address']}/metrics"
                return item

    def action(self, instance: str, kind: str, timeout: float = EVENT_TIMEOUT, **fields: Any) -> Event:
        """The next executor action on `instance` of `kind`; it must have succeeded."""
        ev = self.wait("action", timeout, instance=instance, kind=kind, **fields)
        assert ev["outcome"] == "done", ev
        return ev

    def actions(self, kind: str, names: Sequence[str], timeout: float = EVENT_TIMEOUT) -> dict[str, Event]:
        """Successful `kind` actions on every one of `names`, in whatever order they come."""
        remaining = set(names)
        found = {}
        deadline = time.monotonic() + timeout
        while remaining:
            ev = self.wait("action", max(deadline - time.monotonic(), 0.001), kind=kind,
                           where=lambda e: e["instance"] in remaining)
            assert ev["outcome"] == "done", ev
            found[ev["instance"]] = ev
            remaining.discard(ev["instance"])
        return found

    def mark(self) -> int:
        """Skip everything logged so far (drains the queue without waiting)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.events.append(item)
        self._seen = len(self.events)
        return self._seen

    def since(self, index: int) -> list[Event]:
        return self.events[index:self._seen]

    def ready(self) -> Event:
        """Wait for READY (the first pass done); later waits still see that pass's events."""
        self.wait("metrics-listening", 30.0)
        after = self._seen
        ready = self.wait("ready", EVENT_TIMEOUT)
        self._seen = after
        return ready

    def metrics(self) -> dict[str, float]:
        """The metrics endpoint's samples: 'name{labels}' -> value."""
        assert self.metrics_url is not None
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)  # our own child

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("the daemon did not stop within the deadline:\n"
                                 + self.transcript()) from None
        self.close()
        self.mark()
        return code

    def close(self) -> None:
        """After the process ended: finish reading its output and close the pipe."""
        self._thread.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def transcript(self, last: int = 60) -> str:
        self.mark_quietly()
        return "\n".join(json.dumps(e) for e in self.events[-last:])

    def mark_quietly(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.events.append(item)


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent); labels must match exactly."""
    for key, value in samples.items():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?", key)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return value
    return 0.0


def events_named(events: Sequence[Event], name: str, **fields: Any) -> list[Event]:
    return [e for e in events if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())]
