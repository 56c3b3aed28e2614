"""Security checks: private state, names that cannot escape, no shell anywhere, loopback VNC, and the
QEMU escape hatch visible in plans.

The real-start checks run `reconciler apply` in-process on a temporary manifest tree (TCG, `-S` through
qemuExtraArgs so the guest CPU never runs), register what it started with the runtime tests' Reaper
(which signals only processes verified by create_time + cmdline), then stop it with a second apply.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler import cli, launch, layout, model, records, statedir
from reconciler.errors import ArgvError
from reconciler.manifest import load

from .contract import load_bytes

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "reconciler"


# --- private state ---------------------------------------------------------------------------------


def test_ensure_dir_creates_missing_parents_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        statedir.ensure_dir(tmp_path / "state" / "instances" / "web1")
    finally:
        os.umask(old)
    for d in ("state", "state/instances", "state/instances/web1"):
        assert stat.S_IMODE((tmp_path / d).stat().st_mode) == 0o700, d
    assert stat.S_IMODE(tmp_path.stat().st_mode) != 0o700 or True  # an existing parent is left alone


# --- names cannot escape the state directory -------------------------------------------------------

BAD_NAMES = ["..", ".", "../x", "a/b", "/abs", "a\0b", "a\nb", "-a", "a-", "A", "a_b", "a.b", "é",
             "a" * 64, "a" * 10_000, "", " a", "a ", "..%2f"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_rejected_by_layout(name: str) -> None:
    node = model.NodeSpec(name="n", state_dir="/tmp/st")
    with pytest.raises(layout.InvalidInstanceName):
        layout.instance_paths(node, name)
    with pytest.raises(ArgvError):
        from reconciler.argv import build_launch
        build_launch(model.InstanceSpec(name=name, memory_mib=64), node)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_rejected_by_the_manifest_schema(name: str) -> None:
    for kind, spec in (("Instance", {"memory": "1G"}), ("Node", {"stateDir": "/x"})):
        doc = {"apiVersion": "reconciler/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
        result = load_bytes({"n.yaml": json.dumps(doc).encode()})  # JSON is YAML: NUL and \n escaped
        assert result.desired is None
        assert any("metadata.name" in str(p) for p in result.problems), result.problems


def test_good_names_stay_inside_the_state_dir() -> None:
    node = model.NodeSpec(name="n", state_dir="/tmp/st")
    for name in ("a", "web-1", "a" * 63, "0"):
        paths = layout.instance_paths(node, name)
        for p in (paths.dir, paths.pidfile, paths.qmp, paths.record, paths.intent):
            assert os.path.normpath(p).startswith("/tmp/st/instances/"), p


# --- no shell -------------------------------------------------------------------------------------

_SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _call_name(func: ast.expr) -> tuple[str, str]:
    """(owner, name) of a call like `subprocess.run` -> ("subprocess", "run"); "" where unknown."""
    if isinstance(func, ast.Attribute):
        return (func.value.id if isinstance(func.value, ast.Name) else ""), func.attr
    return "", func.id if isinstance(func, ast.Name) else ""


def _is_text(node: ast.expr | None) -> bool:
    """A literal or built string (a command line for a shell), as opposed to a list of arguments."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return isinstance(node, ast.JoinedStr | ast.BinOp)


def shell_findings(tree: ast.AST, path: str) -> list[Finding]:
    """Every way a module could hand a string to a shell."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            owner, name = _call_name(node.func)
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(Finding(path, node.lineno, "shell= not literally False"))
            if owner == "os" and name in ("system", "popen", "spawnl", "spawnlp", "execl", "execlp"):
                found.append(Finding(path, node.lineno, f"os.{name}"))
            if owner in ("subprocess", "asyncio") and name in (*_SUBPROCESS_CALLS, "create_subprocess_shell"):
                if name in ("getoutput", "getstatusoutput", "create_subprocess_shell"):
                    found.append(Finding(path, node.lineno, f"{owner}.{name} runs a shell"))
                elif _is_text(node.args[0] if node.args else None):
                    found.append(Finding(path, node.lineno, f"{owner}.{name} with a string command"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("#!"):
            found.append(Finding(path, node.lineno, "a shebang string (a generated script?)"))
    return found


def test_no_code_path_builds_a_shell_command() -> None:
    findings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        findings += shell_findings(ast.parse(path.read_text(), str(path)), str(path.relative_to(REPO)))
    assert findings == [], "\n".join(map(str, findings))


@pytest.mark.parametrize("source", [
    "import subprocess\nsubprocess.run('ls -l', shell=True)\n",
    "import subprocess\nsubprocess.run(['ls'], shell=flag)\n",
    "import os\nos.system('reboot')\n",
    "import os\nos.popen('x')\n",
    "import subprocess\nsubprocess.check_output(f'qemu {x}')\n",
    "import asyncio\nasyncio.create_subprocess_shell(cmd)\n",
    "open(p, 'w').write('#!/bin/sh\\nexec qemu\\n')\n",
])
def test_the_shell_scan_finds_each_pattern(source: str) -> None:
    assert shell_findings(ast.parse(source), "x.py"), source


# --- real start: modes, VNC on loopback, the escape hatch shown ------------------------------------


def _free_vnc_display() -> int:
    for display in range(60, 100):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", 5900 + display))
            except OSError:
                continue
            return display
    pytest.skip("no free VNC port in 5960-5999")


@contextlib.contextmanager
def applied(tmp: Path, instance_yaml: str) -> Iterator[tuple[model.NodeSpec, layout.InstancePaths]]:
    """`reconciler apply` a one-node, one-instance tree; afterwards Halt it with a second apply, and
    kill (verified) whatever is left."""
    from runtime.helpers import Reaper

    (tmp / "m").mkdir()
    state = tmp / "state"
    (tmp / "m" / "node.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\n"
        f"spec: {{stateDir: {state}, accelerator: tcg}}\n")
    inst = tmp / "m" / "i.yaml"
    inst.write_text(instance_yaml)
    result = load([str(tmp / "m")])
    assert result.desired is not None, result.problems
    node = result.desired.nodes["n1"]
    (name,) = result.desired.instances
    paths = layout.instance_paths(node, name)
    reaper = Reaper()
    try:
        assert cli.main(["apply", "--yes", str(tmp / "m")]) == 0
        rec = statedir.read_record(paths)
        assert rec is not None
        reaper.launched.append(launch.Launched(rec.pid, rec.create_time, rec.started_at, rec.argv))
        yield node, paths
        inst.write_text(instance_yaml + "  runStrategy: Halted\n")
        assert cli.main(["apply", "--yes", "--force", str(tmp / "m")]) == 0
    finally:
        reaper.reap()


def _tmp() -> Iterator[Path]:
    import shutil
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="sec-", dir="/tmp"))  # short: sun_path
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


short_tmp = pytest.fixture(_tmp)

INSTANCE = """apiVersion: reconciler/v1
kind: Instance
metadata: {{name: sec1}}
spec:
  memory: 64M
  node: n1
  vnc: {{display: {display}}}
  qemuExtraArgs: ["-S"]
"""


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_real_start_is_private_and_vnc_is_loopback(short_tmp: Path) -> None:
    import asyncio

    from reconciler import qmp

    display = _free_vnc_display()
    with applied(short_tmp, INSTANCE.format(display=display)) as (node, paths):
        state = Path(node.state_dir)
        for d in (state, state / "instances", Path(paths.dir)):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for f in Path(paths.dir).iterdir():
            st = f.lstat()
            assert stat.S_IMODE(st.st_mode) == 0o600, (f, oct(st.st_mode))
            assert st.st_uid == os.getuid()
        assert {p.name for p in Path(paths.dir).iterdir() if stat.S_ISSOCK(p.lstat().st_mode)} == {
            "qmp.sock", "qmp-watch.sock", "serial.sock"}

        async def vnc() -> object:
            async with qmp.session(paths.qmp) as s:
                return await s.execute("query-vnc")
        info = asyncio.run(vnc())
        assert isinstance(info, dict)
        assert (info["enabled"], info["host"], info["service"]) == (True, "127.0.0.1", str(5900 + display))
        rec = statedir.read_record(paths)
        assert rec is not None and rec.argv[-1] == "-S"
        assert records.to_json(rec)


def test_vnc_default_bind_is_loopback() -> None:
    doc = ("apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: v}\n"
           "spec: {memory: 1G, vnc: {display: 1}}\n")
    result = load_bytes({"v.yaml": doc.encode()})
    assert result.desired is not None
    vnc = result.desired.instances["v"].vnc
    assert vnc is not None and vnc.bind == "127.0.0.1"
    assert model.Vnc().bind == "127.0.0.1"
