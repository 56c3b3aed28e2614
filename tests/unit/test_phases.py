"""The phase timer: `RECONCILER_PHASES=1` prints each phase of a run on stderr; without it, nothing, and
`mark`/`span` are the no-op functions."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler import phases

MANIFEST = """\
apiVersion: reconciler/v1
kind: Node
metadata: {name: n1}
spec: {stateDir: STATE, accelerator: tcg}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: web1}
spec:
  node: n1
  memory: 64M
  kernel: {path: KERNEL, root: /dev/ram0}
"""


def run_cli(tmp_path: Path, command: str = "plan", **env: str) -> subprocess.CompletedProcess[str]:
    manifests = tmp_path / "m"
    manifests.mkdir(exist_ok=True)
    kernel = tmp_path / "vmlinuz"  # the plan checks the node has it
    kernel.touch()
    (manifests / "a.yaml").write_text(MANIFEST.replace("STATE", str(tmp_path / "state"))
                                      .replace("KERNEL", str(kernel)))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_PHASES")}
    return subprocess.run([sys.executable, "-m", "reconciler", command, str(manifests)], capture_output=True,
                          text=True, env={**clean, **env}, timeout=60, check=False)


def test_phases_on_stderr(tmp_path: Path) -> None:
    done = run_cli(tmp_path, RECONCILER_PHASES="1", RECONCILER_PHASES_T0=repr(time.time()))
    assert done.returncode == 0, done.stderr
    assert "+ web1 on n1" in done.stdout and "phase" not in done.stdout
    rows = [line.split("\t") for line in done.stderr.splitlines()]
    assert all(len(r) == 3 and r[0] == "phase" and float(r[2]) >= 0 for r in rows), done.stderr
    names = [r[1] for r in rows]
    assert names[:8] == ["interpreter start", "cli imports", "command imports, arguments", "manifest load",
                         "connect", "discovery", "plan", "git"]
    assert names[-1] == "total" and "render" in names


def test_status_phases(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "status", RECONCILER_PHASES="1")
    assert done.returncode == 0, done.stderr
    assert "web1" in done.stdout and "phase" not in done.stdout
    names = [line.split("\t")[1] for line in done.stderr.splitlines()]
    names = [n for n in names if n != "rest"]  # the return after render, shown when it took 0.5 ms or more
    assert names == ["cli imports", "command imports, arguments", "manifest load", "discovery", "plan",
                     "render", "total"], done.stderr


def test_off_by_default(tmp_path: Path) -> None:
    done = run_cli(tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    done = run_cli(tmp_path, RECONCILER_PHASES="0")
    assert done.returncode == 0 and done.stderr == ""


def test_off_means_no_ops() -> None:
    if phases.ENABLED:
        pytest.skip("RECONCILER_PHASES=1 in this environment")
    assert phases.mark is phases._noop_mark and phases.span is phases._noop_span
    before = list(phases._marks)
    phases.mark("x")
    with phases.span("y"):
        pass
    assert phases._marks == before and "y" not in phases._spans
    out = io.StringIO()
    phases.report(out)
    assert out.getvalue() == ""
