"""Which files count as manifests: recursion, hidden entries, symlinks inside/outside the tree, loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.manifest import discover


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for rel in [
        "m/a.yaml",
        "m/b.yml",
        "m/sub/c.yaml",
        "m/notes.txt",
        "m/.hidden.yaml",
        "m/.git/d.yaml",
        "m/sub/.swp/e.yaml",
        "outside/o.yaml",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("a: 1\n")
    return tmp_path


def _found(paths: list[str]) -> tuple[list[str], list[str]]:
    result = discover(paths)
    return list(result.files), [str(p) for p in result.problems]


def test_recursive_sorted_and_hidden_skipped(tree: Path) -> None:
    assert _found(["m"]) == (["m/a.yaml", "m/b.yml", "m/sub/c.yaml"], [])


def test_explicit_files_taken_as_given(tree: Path) -> None:
    assert _found(["m/notes.txt", "m/a.yaml", "m/a.yaml"]) == (["m/notes.txt", "m/a.yaml"], [])


def test_missing_path(tree: Path) -> None:
    assert _found(["nope"]) == ([], ["nope: no such file or directory"])


def test_symlink_inside_tree_followed_once(tree: Path) -> None:
    os.symlink("sub", "m/link")  # a second way to reach m/sub/c.yaml
    os.symlink("a.yaml", "m/z.yaml")
    assert _found(["m"]) == (["m/a.yaml", "m/b.yml", "m/link/c.yaml"], [])


def test_symlink_outside_tree_reported(tree: Path) -> None:
    os.symlink("../outside/o.yaml", "m/o.yaml")
    os.symlink("../outside", "m/out")
    real = str(tree / "outside")
    assert _found(["m"]) == (
        ["m/a.yaml", "m/b.yml", "m/sub/c.yaml"],
        [
            f"m/o.yaml: symlink points outside the manifest tree ({real}/o.yaml); not followed",
            f"m/out: symlink points outside the manifest tree ({real}); not followed",
        ],
    )


def test_symlink_loops_reported(tree: Path) -> None:
    os.symlink("..", "m/sub/up")  # directory loop
    os.symlink("self.yaml", "m/self.yaml")  # ELOOP
    os.symlink("missing", "m/broken.yaml")
    assert _found(["m"]) == (
        ["m/a.yaml", "m/b.yml", "m/sub/c.yaml"],
        [
            "m/broken.yaml: broken symlink",
            "m/self.yaml: symlink loop",
            "m/sub/up: symlink loop (the directory contains itself)",
        ],
    )


def test_loop_given_on_command_line(tree: Path) -> None:
    os.symlink("loop.yaml", "loop.yaml")
    assert _found(["loop.yaml"]) == ([], ["loop.yaml: symlink loop"])
