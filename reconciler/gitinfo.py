"""Which git commit the manifests come from, and whether they have uncommitted changes.

Plans show it in their header and carry it in JSON, so a reviewed plan can be traced to a commit.
This is I/O (runs `git` as an argv list); the planner and renderers only receive the result.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class GitInfo:
    root: str  # the work tree's top directory
    commit: str  # full hash of HEAD
    dirty: bool  # the manifest paths differ from HEAD (modified or untracked files)

    @property
    def short(self) -> str:
        return self.commit[:12]


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _maybe_in_work_tree(cwd: Path) -> bool:
    """False only when git could not find a work tree from `cwd`: no `.git` (directory or file) in it or
    any parent, and no GIT_DIR/GIT_WORK_TREE telling git where to look. Saves running git outside a
    repository."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return True
    return any(os.path.lexists(os.path.join(d, ".git")) for d in (cwd, *cwd.parents))


def describe(paths: Sequence[str]) -> GitInfo | None:
    """GitInfo for the work tree holding the first path, or None (no git, not a repo, no commit).

    At most two git runs: the top directory and HEAD in one, then the status of the manifest paths."""
    if not paths:
        return None
    first = Path(paths[0]).resolve()
    cwd = first if first.is_dir() else first.parent
    if not _maybe_in_work_tree(cwd):
        return None
    out = _git(cwd, "rev-parse", "--show-toplevel", "--verify", "-q", "HEAD")
    lines = out.splitlines() if out is not None else []
    if len(lines) != 2:
        return None
    root, commit = lines
    status = _git(cwd, "status", "--porcelain", "--", *(str(Path(p).resolve()) for p in paths))
    return GitInfo(root=root, commit=commit, dirty=bool(status))
