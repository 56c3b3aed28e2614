"""Where a command run's time goes: phase timings on stderr when `RECONCILER_PHASES=1`.

`mark(name)` ends a top-level phase (manifest load, lock, discovery, plan, render, action, ...): the time
since the previous mark is charged to `name`. `span(name)` charges the time inside it to `name` on top
(state-file writes, QEMU launches: they happen inside the action, possibly in parallel). `report()`
prints one `phase<TAB>name<TAB>milliseconds` line per phase, in order, then the spans, then the total.
`RECONCILER_PHASES_T0` (epoch seconds, set by whoever spawned the process) adds the interpreter's start
up to this module's import. bench/bench_cli_phases.py reads the lines.

Off (the default), `mark` and `span` are no-ops chosen once at import: nothing is measured or stored.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

ENABLED = os.environ.get("RECONCILER_PHASES") == "1"

_marks: list[tuple[str, float]] = []
_spans: dict[str, float] = {}
_start = time.perf_counter()
_start_epoch = time.time()
_last = _start


def _mark(name: str) -> None:
    global _last
    now = time.perf_counter()
    _marks.append((name, now - _last))
    _last = now


@contextlib.contextmanager
def _span(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _spans[name] = _spans.get(name, 0.0) + time.perf_counter() - t0


def _noop_mark(name: str) -> None:
    pass


_NULL = contextlib.nullcontext()


def _noop_span(name: str) -> contextlib.AbstractContextManager[None]:
    return _NULL


mark: Callable[[str], None] = _mark if ENABLED else _noop_mark
span: Callable[[str], contextlib.AbstractContextManager[None]] = _span if ENABLED else _noop_span


def _interpreter_start() -> float | None:
    try:
        t0 = float(os.environ.get("RECONCILER_PHASES_T0", ""))
    except ValueError:
        return None
    return _start_epoch - t0 if 0 <= _start_epoch - t0 < 60 else None


def report(stream: TextIO | None = None) -> None:
    """Print the phases (nothing when off). Charges the time since the last mark to "rest"."""
    if not ENABLED:
        return
    out = stream or sys.stderr
    _mark("rest")
    lines = []
    started = _interpreter_start()
    if started is not None:
        lines.append(("interpreter start", started))
    lines += [(name, dt) for name, dt in _marks if name != "rest" or dt >= 0.0005]
    lines += [(f"  within: {name}", dt) for name, dt in _spans.items()]
    lines.append(("total", (started or 0.0) + time.perf_counter() - _start))
    for name, dt in lines:
        print(f"phase\t{name}\t{dt * 1000:.1f}", file=out)
