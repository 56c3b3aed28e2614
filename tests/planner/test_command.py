"""`reconciler plan` end to end in-process: real manifests and git, discovery replaced by a fixed state."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from reconciler import cli, manifest
from reconciler.actual import ActualState
from reconciler.commands import plan as plan_command
from reconciler.planfile import check_fresh, load_plan

from .factories import actual, rec

Cap = pytest.CaptureFixture[str]

NODES = """\
apiVersion: reconciler/v1
kind: Node
metadata: {name: node-a}
spec: {stateDir: state/node-a, accelerator: tcg, memory: 1G}
"""
WEB = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: web}
spec:
  node: node-a
  memory: 256M
"""  # no kernel or disk: the plan's host checks (planner.needs) find what it needs on any machine


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "nodes.yaml").write_text(NODES)
    (tmp_path / "web.yaml").write_text(WEB)
    return tmp_path


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> list[ActualState]:
    """The actual state the command sees (a one-element list, so tests can set it)."""
    box = [ActualState()]
    async def fixed(opened: object) -> ActualState:
        return box[0]

    monkeypatch.setattr(plan_command, "discover_fleet", fixed)
    monkeypatch.setattr(plan_command, "discover_local", lambda nodes: box[0])
    return box


def _applied(tree: Path) -> ActualState:
    desired = manifest.load([str(tree)]).desired
    assert desired is not None
    return actual(rec(desired.instances["web"], "node-a"))


def test_changes(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    assert cli.main(["plan", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "  + web on node-a\n" in out
    assert out.endswith("Plan: 1 to start, 0 to restart, 0 to migrate, 0 to stop.\n")
    assert "\x1b[" not in out  # not a terminal: no colour
    assert cli.main(["plan", "--detailed-exitcode", str(tree)]) == 2


def test_no_changes(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    world[0] = _applied(tree)
    assert cli.main(["plan", "--detailed-exitcode", str(tree)]) == 0
    assert capsys.readouterr().out == "No changes. The nodes match the manifests.\n"


def test_json(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    assert cli.main(["plan", "--json", "--target", "web", str(tree)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format_version"] == "1.0"
    assert data["targets"] == ["web"]
    assert [(a["kind"], a["name"], a["node"]) for a in data["actions"]] == [("start", "web", "node-a")]


def test_manifest_problems_exit_1(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    (tree / "bad.yaml").write_text("apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: x}\n"
                                   "spec: {}\n")
    assert cli.main(["plan", str(tree)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bad.yaml" in captured.err and "no plan made" in captured.err


def test_plan_errors_exit_1(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    (tree / "web.yaml").write_text(WEB.replace("256M", "2G"))
    out_file = tree / "saved.json"
    assert cli.main(["plan", "--detailed-exitcode", "--out", str(out_file), str(tree)]) == 1
    captured = capsys.readouterr()
    expected = "x node node-a: the plan puts 2048 MiB of instance memory on it, it allows 1024 MiB"
    assert expected in captured.out
    assert not out_file.exists() and "not saved" in captured.err


def test_unknown_target(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    assert cli.main(["plan", "--target", "nope", str(tree)]) == 1
    assert "x instance nope: --target names no declared or discovered instance" in capsys.readouterr().out


def test_out_saves_a_fresh_plan(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    out_file = tree.parent / "saved.json"
    assert cli.main(["plan", "--out", str(out_file), str(tree)]) == 0
    assert "reconciler apply --plan" in capsys.readouterr().err
    saved = load_plan(str(out_file))
    desired = manifest.load([str(tree)]).desired
    assert desired is not None
    assert [a.name for a in saved.plan.actions] == ["web"]
    assert check_fresh(saved, desired, ActualState()) == ()
    assert check_fresh(saved, desired, _applied(tree)) == ("instance web on node-a: new record (running)",)


def test_git_header(tree: Path, world: list[ActualState], capsys: Cap) -> None:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(tree), *argv], check=True, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m")
    head = git("rev-parse", "HEAD")
    cli.main(["plan", str(tree)])
    assert capsys.readouterr().out.startswith(f"Manifests: commit {head[:12]} (clean)\n")
    (tree / "web.yaml").write_text(WEB.replace("256M", "512M"))
    cli.main(["plan", "--json", str(tree)])
    assert json.loads(capsys.readouterr().out)["git"] == {"root": str(tree.resolve()), "commit": head,
                                                          "dirty": True}


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("flag", "environ", "stream", "expected"),
    [
        (False, {}, _Tty(), True),
        (False, {}, io.StringIO(), False),
        (True, {}, _Tty(), False),
        (False, {"NO_COLOR": "1"}, _Tty(), False),
        (False, {"NO_COLOR": ""}, _Tty(), True),  # no-color.org: only a non-empty value counts
    ],
)
def test_use_color(flag: bool, environ: dict[str, str], stream: io.StringIO, expected: bool) -> None:
    assert plan_command.use_color(flag, stream, environ) is expected
