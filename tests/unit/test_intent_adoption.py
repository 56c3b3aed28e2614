"""Discovery adopts the process an intent launched only as the one its pidfile names.

With -daemonize, QEMU's foreground process has the daemon's command line and lives on for a moment
after writing the pidfile. An apply killed in that moment left two matching processes; the next plan
adopted the first (the foreground one, about to exit) and wrote its PID in the record, and the apply
after it took the real daemon for a stranger ("pidfile names another process") and refused to start.

Real processes stand in for QEMU: `exec -a .../qemu-system-x86_64 python3 -c ... -pidfile P` has the
command line discovery looks for, and never speaks QMP (its state is then unknown, which is fine here).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from reconciler import discovery, intent, layout, model, statedir
from reconciler.actual import RunState

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"


@pytest.fixture
def node(tmp_path: Path) -> model.NodeSpec:
    return model.NodeSpec(name="n1", state_dir=str(tmp_path / "state"))


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def fake_qemu(paths: layout.InstancePaths, procs: list[subprocess.Popen[bytes]],
              tmp: Path) -> tuple[str, ...]:
    argv0 = str(tmp / "qemu-system-x86_64")
    argv = (argv0, "-c", SLEEPER, "-pidfile", paths.pidfile)
    proc = subprocess.Popen(["bash", "-c", f'exec -a "$0" {sys.executable} "$@"', argv0, *argv[1:]],
                            stdout=subprocess.PIPE)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # exec'd: its command line is the one above
    proc.stdout.close()
    assert tuple(psutil.Process(proc.pid).cmdline()) == argv
    return argv


def left_by_a_killed_apply(node: model.NodeSpec, argv: tuple[str, ...]) -> layout.InstancePaths:
    paths = layout.instance_paths(node, "web")
    spec = model.InstanceSpec(name="web", memory_mib=64)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)  # an apply that was killed: its PID no longer runs
    it = intent.Intent(intent.IntentKind.START, "web", node.name, time.time() - 5, dead_pid, 1.0,
                       argv=argv, spec=spec)
    statedir.ensure_dir(paths.dir)
    statedir.write_json(paths.intent, intent.to_jsonable(it))
    return paths


def test_the_process_the_pidfile_names_is_adopted_not_the_foreground_one(
        node: model.NodeSpec, procs: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    paths = layout.instance_paths(node, "web")
    statedir.ensure_dir(paths.dir)
    foreground = fake_qemu(paths, procs, tmp_path)
    daemon = fake_qemu(paths, procs, tmp_path)
    assert foreground == daemon
    left_by_a_killed_apply(node, daemon)
    Path(paths.pidfile).write_text(f"{procs[1].pid}\n")
    found = discovery.discover([node], qmp_timeout=0.2).find("web")
    assert [i.pid for i in found] == [procs[1].pid]  # was procs[0].pid, the foreground process
    record = statedir.read_record(paths)
    assert record is not None and record.pid == procs[1].pid


def test_two_matching_processes_and_no_pidfile_yet_is_a_start_in_progress(
        node: model.NodeSpec, procs: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    paths = layout.instance_paths(node, "web")
    statedir.ensure_dir(paths.dir)
    argv = fake_qemu(paths, procs, tmp_path)
    fake_qemu(paths, procs, tmp_path)
    left_by_a_killed_apply(node, argv)
    found = discovery.discover([node], qmp_timeout=0.2).find("web")
    assert [(i.state, i.detail) for i in found] == [
        (RunState.UNKNOWN, "QEMU is still starting (its pidfile does not name it yet)")]
    assert statedir.read_record(paths) is None  # nothing adopted,
    assert Path(paths.intent).exists()  # and nothing cleaned: the next look decides
