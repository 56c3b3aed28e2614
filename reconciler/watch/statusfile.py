"""The daemon's state file (`watch-status.json`): what `reconciler status` shows about the daemon.

`status` runs in another process and must not ask the daemon anything (it may be down), so after every
pass the daemon writes a small JSON file atomically: broken manifest files (and whether their last good
version stands in), whether pruning is suspended, instances held back by the crash-loop backoff, plan
errors, the last pass's failures, and the time of the last successful pass. Its default place is the
state directory of the first declared local node (sorted by name), where `status` finds it from the manifests
alone; `--status-file` puts it elsewhere.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import statedir
from reconciler.model import NodeSpec
from reconciler.values import Value

FILE_NAME = "watch-status.json"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class BrokenFile(Value):
    """A manifest file that does not load, and whether its last good version is held."""

    path: str
    problems: tuple[str, ...]
    held: bool  # its last good version is in use
    since: float


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class HeldRestart(Value):
    """An instance whose automatic restart is held back."""

    name: str
    restarts: int
    not_before: float  # epoch seconds


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class WatchStatus(Value):
    """The daemon's status file."""

    pid: int
    updated_at: float
    passes: int
    last_success_at: float | None = None
    revision: str | None = None
    manifest_errors: tuple[BrokenFile, ...] = ()
    pruning_suspended: bool = False
    backoff: tuple[HeldRestart, ...] = ()
    plan_errors: tuple[str, ...] = ()
    failed_actions: tuple[str, ...] = ()
    last_error: str | None = None  # the last pass could not complete (lock, discovery)
    stopped: bool = False  # written by a daemon on its way out
    unreachable: tuple[str, ...] = ()  # one line per node the last pass could not reach


def default_path(nodes: Sequence[NodeSpec]) -> str | None:
    """`<first local node's state dir>/watch-status.json`, or None without a local node (a remote node's
    state directory is on its host: the daemon and `status` then need `--status-file`)."""
    local = [n for n in nodes if n.ssh is None]
    if not local:
        return None
    first = min(local, key=lambda n: n.name)
    return posixpath.join(first.state_dir, FILE_NAME)


def to_json(status: WatchStatus) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "pid": status.pid,
        "updated_at": status.updated_at,
        "passes": status.passes,
        "last_success_at": status.last_success_at,
        "revision": status.revision,
        "manifest_errors": [{"path": b.path, "problems": list(b.problems), "held": b.held, "since": b.since}
                            for b in status.manifest_errors],
        "pruning_suspended": status.pruning_suspended,
        "backoff": [{"name": h.name, "restarts": h.restarts, "not_before": h.not_before}
                    for h in status.backoff],
        "plan_errors": list(status.plan_errors),
        "failed_actions": list(status.failed_actions),
        "last_error": status.last_error,
        "stopped": status.stopped,
        "unreachable": list(status.unreachable),
    }


def write(path: str, status: WatchStatus) -> None:
    statedir.write_json(path, to_json(status))


def read(path: str) -> WatchStatus | None:
    """The status in `path`, or None when absent or unreadable (never raises: `status` must work)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("format_version") != FORMAT_VERSION:
            return None
        return WatchStatus(
            pid=int(raw["pid"]), updated_at=float(raw["updated_at"]), passes=int(raw["passes"]),
            last_success_at=raw.get("last_success_at"), revision=raw.get("revision"),
            manifest_errors=tuple(BrokenFile(str(b["path"]), tuple(map(str, b["problems"])), bool(b["held"]),
                                             float(b["since"])) for b in raw.get("manifest_errors", [])),
            pruning_suspended=bool(raw.get("pruning_suspended")),
            backoff=tuple(HeldRestart(str(h["name"]), int(h["restarts"]), float(h["not_before"]))
                          for h in raw.get("backoff", [])),
            plan_errors=tuple(map(str, raw.get("plan_errors", []))),
            failed_actions=tuple(map(str, raw.get("failed_actions", []))),
            last_error=raw.get("last_error"), stopped=bool(raw.get("stopped")),
            unreachable=tuple(map(str, raw.get("unreachable", []))),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def daemon_alive(status: WatchStatus) -> bool:
    """Whether the PID that wrote the file still exists (best effort: shown, never acted on)."""
    if status.stopped:
        return False
    try:
        os.kill(status.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- for `reconciler status` (pure) ------------------------------------------------------------------


def hold_detail(hold: HeldRestart, now: float) -> str:
    left = max(hold.not_before - now, 0.0)
    return f"crash loop: backing off after {hold.restarts} restarts, next try in {left:.0f}s"


def row_details(status: WatchStatus, now: float) -> dict[str, str]:
    """Instance name -> the daemon's word about it (crash-loop holds still in force)."""
    return {h.name: hold_detail(h, now) for h in status.backoff if h.not_before > now}


def summary_lines(status: WatchStatus, now: float, alive: bool) -> list[str]:
    """The lines `status` prints under its table about the daemon."""
    state = "running" if alive else "not running"
    head = f"watch daemon (pid {status.pid}, {state}): {status.passes} passes"
    if status.last_success_at is not None:
        head += f", last successful reconcile {max(now - status.last_success_at, 0.0):.0f}s ago"
    if status.revision:
        head += f", revision {status.revision[:12]}{'-dirty' if status.revision.endswith('-dirty') else ''}"
    lines = [head]
    if status.manifest_errors:
        n = len(status.manifest_errors)
        lines.append(f"  {n} broken manifest file{'s' if n != 1 else ''}; pruning suspended")
        for b in status.manifest_errors:
            how = "last good version in use" if b.held else "ignored (no good version yet)"
            lines.append(f"  {b.path}: {how}")
            lines.extend(f"    {p}" for p in b.problems)
    for h in status.backoff:
        if h.not_before > now:
            lines.append(f"  {h.name}: {hold_detail(h, now)}")
    lines.extend(f"  {u}" for u in status.unreachable)
    lines.extend(f"  plan error: {e}" for e in status.plan_errors)
    lines.extend(f"  failed: {f}" for f in status.failed_actions)
    if status.last_error:
        lines.append(f"  last pass failed: {status.last_error}")
    return lines
