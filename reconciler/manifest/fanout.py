"""Parse many manifest files on two cores: a forked child parses half, the parent the other half.

Parsing YAML is CPU-bound and the GIL keeps threads from helping, so for large trees (thousands of
instances) the per-file work is split by bytes between this process and one forked child, which sends
its results back pickled through a pipe (as plain tuples: pickling dataclasses with slots is slow),
read as they come.
Used only when it pays (enough work), when fork is safe
(a single-threaded process) and when there are two CPUs; any failure of the child falls back to parsing
its half here, so the result never depends on whether the fork happened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _split(sizes: Sequence[int]) -> int:
    """Index that cuts `sizes` into two halves of about equal total."""
    half, total = sum(sizes) / 2, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= half:
            return i + 1
    return len(sizes)


def can_fork() -> bool:
    import threading  # here: asked only of a tree large enough to fork for (a small run imports none)

    return hasattr(os, "fork") and (os.cpu_count() or 1) >= 2 and threading.active_count() == 1


def map_in_two(
    items: Sequence[T],
    sizes: Sequence[int],
    work: Callable[[T], R],
    encode: Callable[[R], object],
    decode: Callable[[object], R],
    min_size: int,
    dispatch_table: Mapping[type, Callable[[Any], Any]] | None = None,
) -> list[R]:
    """[work(item) for item in items], the second half computed in a forked child when the items'
    `sizes` add up to `min_size` or more. `encode`/`decode` carry results through pickle cheaply, and so
    does `dispatch_table` (pickle's reductions by type), when given."""
    if sum(sizes) < min_size or len(items) < 2 or not can_fork():
        return [work(item) for item in items]
    import pickle  # only when forking (a small tree, the usual `plan`, does not pay its import)

    cut = _split(sizes)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        status = 1
        try:
            os.close(read_end)
            results = [encode(work(item)) for item in items[cut:]]
            with os.fdopen(write_end, "wb") as pipe:
                pickler = pickle.Pickler(pipe, protocol=pickle.HIGHEST_PROTOCOL)
                if dispatch_table is not None:
                    pickler.dispatch_table = dispatch_table
                pickler.dump(results)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    first = [work(item) for item in items[:cut]]
    second: list[R] | None = None
    with os.fdopen(read_end, "rb") as pipe:
        try:  # read as it comes: the whole payload is never held at once
            second = [decode(result) for result in pickle.load(pipe)]
        except Exception:  # a broken payload (a dead child, or our bug), never the user's: redo the work here
            second = None
    _, status = os.waitpid(pid, 0)
    if status != 0:
        second = None
    if second is None or len(second) != len(items) - cut:
        second = [work(item) for item in items[cut:]]
    return first + second
