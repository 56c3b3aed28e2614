"""gitinfo.describe against real git repositories, counting git runs through a logging `git` on PATH:
none outside a repository, one inside one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler import gitinfo

REAL_GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(REAL_GIT is None, reason="git not installed")


@pytest.fixture
def git_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that logs its arguments, then runs the real one."""
    log = tmp_path / "git.log"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {REAL_GIT} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:/usr/bin:/bin")
    for var in ("GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(var, raising=False)
    return log


def runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def repo(path: Path, commit: bool = True) -> Path:
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (path / "m").mkdir()
    (path / "m" / "a.yaml").write_text("x: 1\n")
    if commit:
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return path


def head(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_outside_a_repository_runs_no_git(tmp_path: Path, git_log: Path) -> None:
    (tmp_path / "plain" / "m").mkdir(parents=True)
    assert gitinfo.describe([str(tmp_path / "plain" / "m")]) is None
    assert runs(git_log) == []


def test_clean_repository_one_run(tmp_path: Path, git_log: Path) -> None:
    r = repo(tmp_path / "r")
    commit = head(r)
    start = len(runs(git_log))
    info = gitinfo.describe([str(r / "m")])
    assert info == gitinfo.GitInfo(root=str(r), commit=commit, dirty=False)
    assert [line.split()[2] for line in runs(git_log)[start:]] == ["status"]


def test_dirty_from_a_file_path(tmp_path: Path, git_log: Path) -> None:
    r = repo(tmp_path / "r")
    (r / "m" / "a.yaml").write_text("x: 2\n")
    info = gitinfo.describe([str(r / "m" / "a.yaml")])
    assert info is not None and info.dirty and info.commit == head(r)


def test_a_file_named_head_does_not_confuse_it(tmp_path: Path, git_log: Path) -> None:
    r = repo(tmp_path / "r")
    (r / "m" / "HEAD").write_text("")
    info = gitinfo.describe([str(r / "m")])
    assert info is not None and info.commit == head(r) and info.dirty


def test_repository_without_a_commit(tmp_path: Path, git_log: Path) -> None:
    r = repo(tmp_path / "r", commit=False)
    assert gitinfo.describe([str(r / "m")]) is None


def test_linked_worktree_has_a_git_file(tmp_path: Path, git_log: Path) -> None:
    r = repo(tmp_path / "r")
    wt = tmp_path / "wt"
    subprocess.run(["git", "-C", str(r), "worktree", "add", "-q", "--detach", str(wt)], check=True)
    assert (wt / ".git").is_file()
    info = gitinfo.describe([str(wt / "m")])
    assert info == gitinfo.GitInfo(root=str(wt), commit=head(r), dirty=False)
