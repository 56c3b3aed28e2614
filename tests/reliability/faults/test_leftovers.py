"""A writer killed between creating its temporary file and renaming it (found by SIGKILLing `watch` during a
start: `.intent.json.<random>.tmp` was left forever) leaves a file discovery now removes; a live writer's
temporary file is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from reconciler import discovery, layout, statedir
from reconciler.model import NodeSpec


def test_discovery_removes_temporary_files_of_dead_writers_only(tmp_path: Path) -> None:
    node = NodeSpec(name="n", state_dir=str(tmp_path / "state"))
    paths = layout.instance_paths(node, "web1")
    statedir.ensure_dir(paths.dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    d = Path(paths.dir)
    killed = d / f".intent.json.{int(dead.stdout)}.k1ll3d_x.tmp"
    killed.write_text("{half")
    live = d / f".record.json.{os.getpid()}.wr1t1ng_.tmp"  # this process: still writing
    live.write_text("{")
    foreign = d / ".notes.tmp"  # not a name atomic_write makes
    foreign.write_text("x")
    discovery.discover([node])
    assert not killed.exists()
    assert live.exists() and foreign.exists()


def test_atomic_write_names_its_temporary_file_after_the_writer(tmp_path: Path) -> None:
    # The name is what makes the cleanup safe; a write that fails leaves nothing either way.
    target = tmp_path / "record.json"
    statedir.atomic_write(target, b"{}")
    assert target.read_bytes() == b"{}" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
    assert statedir._temp_writer(f".record.json.{12345}.ab_cd123.tmp") == 12345
    assert statedir._temp_writer(".record.json.ab_cd123.tmp") is None
