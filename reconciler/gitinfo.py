"""Which git commit the manifests come from, and whether they have uncommitted changes.

Plans show it in their header and carry it in JSON, so a reviewed plan can be traced to a commit.
This is I/O (runs `git` as an argv list); the planner and renderers only receive the result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class GitInfo(Value):
    """The git revision the manifests come from."""

    root: str  # the work tree's top directory
    commit: str  # full hash of HEAD
    dirty: bool  # the manifest paths differ from HEAD (modified or untracked files)

    @property
    def short(self) -> str:
        return self.commit[:12]


def _git(cwd: str, *args: str) -> Callable[[], str | None]:
    """Start git now; the returned function waits for its output (None if git failed or is absent)."""
    import subprocess  # only where a work tree is found

    try:
        proc = subprocess.Popen(["git", "-C", cwd, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return lambda: None

    def output() -> str | None:
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, not yet reaped
            proc.communicate()
            return None
        return out.strip() if proc.returncode == 0 else None

    return output


def _elsewhere() -> bool:
    """GIT_DIR/GIT_WORK_TREE tell git where to look: the `.git` search below does not apply."""
    return bool(os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"))


def _top(cwd: str) -> str | None:
    """The nearest of `cwd` (absolute) and its parents holding a `.git` (a directory, or the file of a
    linked work tree or submodule): the work tree's top, as git finds it; None when there is none."""
    while True:
        if os.path.lexists(os.path.join(cwd, ".git")):
            return cwd
        parent = os.path.dirname(cwd)
        if parent == cwd:
            return None
        cwd = parent


def _head(status_lines: Sequence[str]) -> str | None:
    """HEAD's commit from `status --branch`'s `# branch.oid` header; None before the first commit."""
    for line in status_lines:
        words = line.split()
        if len(words) == 3 and words[:2] == ["#", "branch.oid"] and words[2] != "(initial)":
            return words[2]
    return None


def describe(paths: Sequence[str]) -> GitInfo | None:
    """GitInfo for the work tree holding the first path, or None (no git, not a repo, no commit)."""
    return describe_started(paths)()


def describe_started(paths: Sequence[str]) -> Callable[[], GitInfo | None]:
    """`describe`, begun now and answered by the returned function: git runs while the caller loads and
    plans (a plan's few milliseconds of git hidden behind its own work).

    One git run: `status --porcelain=v2 --branch` says HEAD's commit (its header) and lists what differs
    under the paths; the top directory is where git found `.git`. Outside any work tree (no `.git` above
    the path) git is not run at all; with GIT_DIR or GIT_WORK_TREE set, git is asked for the top too."""
    if not paths:
        return lambda: None
    first = os.path.realpath(paths[0])  # os.path, not pathlib: a plan's path never needs its import
    cwd = first if os.path.isdir(first) else os.path.dirname(first)
    top = None if _elsewhere() else _top(cwd)
    if top is None and not _elsewhere():
        return lambda: None
    status = _git(cwd, "status", "--porcelain=v2", "--branch", "--", *(os.path.realpath(p) for p in paths))

    def answer() -> GitInfo | None:
        out = status()
        lines = out.splitlines() if out is not None else []
        commit = _head(lines)
        if commit is None:
            return None
        dirty = any(line and not line.startswith("#") for line in lines)
        root = top if top is not None else _git(cwd, "rev-parse", "--show-toplevel")()
        return GitInfo(root=root, commit=commit, dirty=dirty) if root else None

    return answer
