"""Unit: a command imports only what it uses, so the cut of issue 13 stays cut.

Every `plan`, `status` and `validate` pays for its imports before any work: psutil (reconciler.procs
reads /proc itself), qemu.qmp (discovery's query-status speaks its three lines itself), fastjsonschema
(the compiled schema check is cached and runs without it), jsonschema (only to word a rejected document),
asyncssh (only for remote nodes), the executor, launch and host facts are not needed by them. Each command
runs in a fresh interpreter on a local, valid tree (the schema cache warmed by a first run) and prints
the modules it ended with.
"""

from __future__ import annotations

import json
import os
import site as sitepackages
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

NEVER = ("psutil", "qemu", "fastjsonschema", "jsonschema", "asyncssh", "yaml", "pickle", "difflib",
         "decimal", "reconciler.executor", "reconciler.launch", "reconciler.hostfacts", "reconciler.lock",
         "reconciler.remote", "reconciler.planfile", "reconciler.render.json", "reconciler.provision.images",
         "reconciler.argv")

# What each command leaves out on top: status asks local nodes directly (no fleet), validate looks at no node.
ALSO_NEVER = {"plan": (), "status": ("reconciler.node", "reconciler.fleet"),
              "validate": ("asyncio", "reconciler.node", "reconciler.fleet", "reconciler.discovery",
                           "reconciler.planner")}

PROBE = """
import json, sys
from reconciler import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.__stderr__)
"""


def _tree(tmp_path: Path) -> Path:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text(f"""\
apiVersion: reconciler/v1
kind: Node
metadata:
  name: n1
spec:
  stateDir: {tmp_path / 'state'}
  accelerator: tcg
  migrationPorts: {{first: 49152, last: 49183}}
---
apiVersion: reconciler/v1
kind: Instance
metadata:
  name: vm1
spec:
  node: n1
  memory: 64M
  kernel:
    path: {kernel}
    root: /dev/ram0
""")  # block YAML, as the examples: the fast reader's, which does not import PyYAML
    return manifests


def _modules(tmp_path: Path, *args: str, site: bool = True) -> list[str]:
    # Without site (-S), site-packages is on the path as a plain directory: its .pth files do not run.
    path = [str(REPO)] if site else [str(REPO), *sitepackages.getsitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    flags = () if site else ("-S",)
    done = subprocess.run([sys.executable, *flags, "-c", PROBE, *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60, check=False)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert last.startswith("{"), done.stdout + done.stderr
    result = json.loads(last)
    assert result["code"] in (0, 1), done.stdout + done.stderr  # 1: the plan may name a missing binary
    return list(result["modules"])


@pytest.mark.parametrize("command", ["plan", "status", "validate"])
def test_command_imports_nothing_it_does_not_use(tmp_path: Path, command: str) -> None:
    manifests = _tree(tmp_path)
    _modules(tmp_path, "validate", str(manifests))  # warms the compiled schema check's cache
    modules = _modules(tmp_path, command, str(manifests))
    never = NEVER + ALSO_NEVER[command]
    unwanted = [m for m in modules if any(m == n or m.startswith(n + ".") for n in never)]
    assert unwanted == []


# Standard modules the commands do without (a venv's interpreter imports none of them before ours; this
# machine's site-packages has a .pth that does, hence `python -S` with site-packages on PYTHONPATH):
# pathlib (with urllib.parse), tempfile (with random), shutil (with bz2 and lzma: reconciler.cmdpath looks a
# bare QEMU binary name up on PATH), hashlib (OpenSSL: reconciler.digest) and ipaddress (only for addresses).
# And ast and dis: inspect, which dataclasses imports, is a stand-in until used (reconciler.lazystdlib).
# And the utf-8-sig codec (a BOM is stripped by hand), and, without asyncio, threading (only a tree large
# enough to parse on two cores asks whether the process has threads).
_STDLIB_NEVER = ("pathlib", "tempfile", "urllib", "shutil", "hashlib", "_hashlib", "ipaddress", "ast", "dis",
                 "encodings.utf_8_sig")
STDLIB_NEVER = {"plan": _STDLIB_NEVER, "status": (*_STDLIB_NEVER, "threading"),
                "validate": (*_STDLIB_NEVER, "threading")}


@pytest.mark.parametrize("command", ["plan", "status", "validate"])
def test_command_imports_no_standard_module_it_does_not_use(tmp_path: Path, command: str) -> None:
    manifests = _tree(tmp_path)
    _modules(tmp_path, "validate", str(manifests))  # warms the compiled schema check's cache (needs site)
    modules = _modules(tmp_path, command, str(manifests), site=False)
    unwanted = [m for m in modules if any(m == n or m.startswith(n + ".") for n in STDLIB_NEVER[command])]
    assert unwanted == []
