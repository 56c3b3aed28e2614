"""End-to-end: a start and a hard stop through the CLI import no standard module they do without.

Every `apply` pays for its imports before QEMU is even asked (issue 13: a start within bare QEMU + 80 ms).
State writes use os.open and a memfd rather than tempfile (with random, shutil, bz2 and lzma), directories
os.path rather than pathlib (with urllib.parse), digests reconciler.digest rather than hashlib (OpenSSL),
the QEMU binary is found on PATH by reconciler.cmdpath rather than shutil, and asyncio comes without ssl
(reconciler.lazystdlib); a plain start opens no qemu.qmp session, and a forced stop speaks its two
commands itself. Each command runs in a fresh
`python -S` with site-packages on PYTHONPATH, so this machine's .pth files cannot hide an import.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest
from executor.kit import World, make_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
# A plain start needs no QMP session: the launch's first answer says it runs (executor.start._settle). A
# forced stop's query-status and quit go through a qmp.PlainSession. So neither loads qemu.qmp, nor
# inspect's real module (a stand-in until used, reconciler.lazystdlib), nor ssl (asyncio comes without it).
NEVER = ("pathlib", "tempfile", "urllib", "shutil", "hashlib", "_hashlib", "random", "bz2", "lzma", "qemu",
         "ast", "dis", *(("ssl", "_ssl") if sys.version_info[:2] in ((3, 11), (3, 12)) else ()))

PROBE = """
import json, sys
from reconciler import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.__stderr__)
"""


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def _run(world: World, *args: str) -> tuple[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *site.getsitepackages()]),
           "XDG_CACHE_HOME": str(world.root / "cache")}
    done = subprocess.run([sys.executable, "-S", "-c", PROBE, *args, str(world.manifests)],
                          capture_output=True, text=True, env=env, cwd=world.root, timeout=120, check=False)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert last.startswith("{"), done.stdout + done.stderr
    result = json.loads(last)
    assert result["code"] == 0, done.stdout + done.stderr
    return done.stdout, list(result["modules"])


def test_start_and_hard_stop_import_no_standard_module_they_do_not_use(world: World) -> None:
    world.instance("web", "node-a")
    _run(world, "validate")  # fills the schema check's cache, as any earlier run has
    out, started = _run(world, "apply", "--yes", "--target", "web")
    assert "started" in out
    world.instance("web", "node-a", runStrategy="Halted")
    out, stopped = _run(world, "apply", "--yes", "--force", "--target", "web")
    assert "stopped" in out
    for modules in (started, stopped):
        assert "asyncio" in modules  # the probe saw the executor's run (not an empty one)
        assert [m for m in modules if any(m == n or m.startswith(n + ".") for n in NEVER)] == []
