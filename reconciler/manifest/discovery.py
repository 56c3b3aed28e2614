"""Which files are manifests: every .yaml/.yml file under the given paths, recursively.

Hidden files and directories (a leading '.') are skipped, so .git and editor swap files never count.
Symlinks are followed only when they resolve inside the tree being walked, each real file is read once,
and a symlink that loops is reported instead of hanging the walk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.manifest.problems import Problem
from reconciler.values import Value

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Discovery(Value):
    """The manifest files found under the given paths, and what could not be read."""

    files: tuple[str, ...]  # paths as the user would write them (joined onto the given roots)
    problems: tuple[Problem, ...]
    symlinks: bool = False  # the walk met a symlink: a file may be known under another name


def discover(paths: Sequence[str]) -> Discovery:
    """Manifest files under `paths` (files are taken as given, directories walked), sorted per root."""
    files: list[str] = []
    problems: list[Problem] = []
    seen: set[str] = set()  # real paths of files already taken
    links: list[str] = []  # symlinks met on the way
    for root in paths:
        try:
            is_dir = os.path.isdir(root)
            exists = os.path.exists(root)
        except (OSError, ValueError):
            is_dir = exists = False
        if is_dir:
            if os.path.islink(root):
                links.append(root)
            _walk(root, os.path.realpath(root), [os.path.realpath(root)], files, problems, seen, links)
        elif exists:
            if os.path.islink(root):
                links.append(root)
            real = os.path.realpath(root)
            if real not in seen:
                seen.add(real)
                files.append(root)
        else:
            problems.append(Problem(root, message=_missing_reason(root)))
    return Discovery(tuple(files), tuple(problems), bool(links))


def _missing_reason(path: str) -> str:
    try:
        os.stat(path)
    except OSError as err:
        if err.strerror and "symbolic links" in err.strerror:
            return "symlink loop"
        return (
            "no such file or directory"
            if isinstance(err, FileNotFoundError)
            else f"cannot read: {err.strerror}"
        )
    except ValueError:
        return "invalid path"
    return "not a file or directory"


def _inside(real: str, tree: str) -> bool:
    return real == tree or real.startswith(tree.rstrip(os.sep) + os.sep)


def _walk(
    directory: str, tree: str, stack: list[str], files: list[str], problems: list[Problem], seen: set[str],
    links: list[str],
) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as err:
        problems.append(Problem(directory, message=f"cannot read directory: {err.strerror or err}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = entry.path
        is_yaml = entry.name.endswith(SUFFIXES)
        if entry.is_symlink():
            links.append(path)
            real = os.path.realpath(path)
            try:
                os.stat(path)
            except OSError as err:
                if is_yaml or err.errno == 40:  # ELOOP: report loops whatever the name
                    reason = "symlink loop" if err.errno == 40 else "broken symlink"
                    problems.append(Problem(path, message=reason))
                continue
            if not _inside(real, tree):
                if is_yaml or os.path.isdir(real):
                    problems.append(
                        Problem(
                            path, message=f"symlink points outside the manifest tree ({real}); not followed"
                        )
                    )
                continue
        else:
            real = os.path.join(stack[-1], entry.name)  # a plain entry of a directory whose real path we know
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if real in stack:
                problems.append(Problem(path, message="symlink loop (the directory contains itself)"))
                continue
            stack.append(real)
            _walk(path, tree, stack, files, problems, seen, links)
            stack.pop()
        elif is_yaml:
            key = real if entry.is_symlink() else os.path.join(stack[-1], entry.name)  # no syscall
            if key not in seen:
                seen.add(key)
                files.append(path)
