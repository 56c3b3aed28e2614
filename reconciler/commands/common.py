"""Pieces several commands share: loading the manifests all-or-nothing, confirmation, the node locks,
the nodes of a run (reconciler.fleet) and the report of those that could not be reached."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING

from reconciler.errors import ManifestLoadError
from reconciler.model import DesiredState

if TYPE_CHECKING:
    from reconciler import lock
    from reconciler.fleet import Fleet


def load_desired(paths: Sequence[str], consequence: str) -> DesiredState:
    """The desired state, or ManifestLoadError listing every problem (`consequence`: what is not done).

    plan and apply act on a tree only when all of it is valid, as Terraform does; the watch daemon has
    its finer, per-file rule (reconciler.watch).
    """
    from reconciler import manifest

    result = manifest.load(paths)
    if result.desired is None:
        raise ManifestLoadError(tuple(str(p) for p in result.problems), consequence)
    return result.desired


def confirm(what: str) -> bool:
    """Ask on the terminal before acting (`what`: "apply", "stop", ...); refuse without a terminal."""
    import sys

    from reconciler.errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {what} without confirmation: stdin is not a terminal (use --yes)")
    print("\nDo you want to perform these actions? Only 'yes' will be accepted.")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        return False
    return answer.strip() == "yes"


def say_waiting(path: str, holder: lock.Holder | None) -> None:
    """A run waiting for a node lock says on stderr whom it waits for."""
    who = holder.describe() if holder is not None else "another process"
    print(f"waiting for the node lock {path}, held by {who}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def locked_fleet(desired: DesiredState, operation: str, timeout: float | None) -> AsyncIterator[Fleet]:
    """Every declared node opened (remote links in parallel) and locked on the node, in name order, as
    apply and the verbs take them. Unreachable nodes are in `fleet.unreachable`; see `report`."""
    from reconciler import fleet as fleet_mod
    from reconciler import phases

    async with fleet_mod.opened(desired.nodes.values()) as fleet:
        phases.mark("connect")
        async with fleet.locked(operation, timeout, say_waiting):
            yield fleet


def report_unreachable(fleet: Fleet, code: int) -> int:
    """Say on stderr, one line each, which nodes could not be reached; the run then exits 1 at least."""
    from reconciler.errors import ExitCode
    from reconciler.fleet import unreachable_lines

    for line in unreachable_lines(fleet):
        print(line, file=sys.stderr)
    if fleet.unreachable and code in (ExitCode.OK, ExitCode.CHANGES):
        return ExitCode.ERROR
    return code


@contextlib.contextmanager
def hold_node_locks(lock_paths: Sequence[str], operation: str, timeout: float | None) -> Iterator[None]:
    """The node locks, as apply takes them, saying on stderr whom we wait for."""
    import sys

    from reconciler import lock

    def waiting(path: str, holder: lock.Holder | None) -> None:
        who = holder.describe() if holder is not None else "another process"
        print(f"waiting for the node lock {path}, held by {who}", file=sys.stderr, flush=True)

    with lock.hold_all(lock_paths, operation, timeout, waiting):
        yield
