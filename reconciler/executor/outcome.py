"""What each action came to, and the run's summary: the executor's only output besides progress lines."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from reconciler.planner.actions import Action, ActionKind, DiskChange
from reconciler.values import Value


class Status(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # an earlier action on the same instance failed


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ActionResult(Value):
    """The outcome of one action."""

    action: Action
    status: Status
    detail: str = ""  # one line: what happened, or why it failed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is Status.DONE


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DiskResult(Value):
    """What became of a disk image deletion of the plan (issue 14)."""

    change: DiskChange
    status: Status
    detail: str = ""
    deleted: bool = False  # False when done: the image was no longer ours at apply time, and kept


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Summary(Value):
    """The outcomes of a whole run."""

    results: tuple[ActionResult, ...]
    disks: tuple[DiskResult, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and all(d.status is Status.DONE for d in self.disks)

    def done(self, kind: ActionKind) -> int:
        return sum(1 for r in self.results if r.ok and r.action.kind is kind)

    @property
    def failed(self) -> tuple[ActionResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    def line(self) -> str:
        """"Apply complete: 2 started, 1 stopped, 0 restarted, 1 migrated." (+ failures)."""
        words = [(ActionKind.START, "started"), (ActionKind.STOP, "stopped"),
                 (ActionKind.RESTART, "restarted"), (ActionKind.MIGRATE, "migrated")]
        counts = ", ".join(f"{self.done(k)} {w}" for k, w in words)
        updated = self.done(ActionKind.UPDATE)
        if updated:  # named only when there are some: the usual line stays as it was
            counts += f", {updated} record{'s' if updated != 1 else ''} updated"
        deleted = sum(1 for d in self.disks if d.deleted)
        if deleted:
            counts += f", {deleted} disk image{'s' if deleted != 1 else ''} deleted"
        bad = self.failed
        bad_disks = [d for d in self.disks if d.status is not Status.DONE]
        if not bad and not bad_disks:
            return f"Apply complete: {counts}."
        nfail = sum(1 for r in bad if r.status is Status.FAILED) + \
            sum(1 for d in bad_disks if d.status is Status.FAILED)
        nskip = len(bad) + len(bad_disks) - nfail
        tail = f"{nfail} failed" + (f", {nskip} skipped" if nskip else "")
        return f"Apply finished with errors: {counts}; {tail}."


class ActionFailed(Exception):
    """Raised inside an action with the one line the user sees; the scheduler turns it into a result."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
