"""Pieces several commands share: loading the manifests all-or-nothing, confirmation, the node locks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from reconciler.errors import ManifestLoadError
from reconciler.model import DesiredState


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
