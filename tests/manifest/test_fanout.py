"""Two-core parsing gives exactly what one core gives, and survives a failing child."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler import manifest
from reconciler.manifest import fanout, parse
from tests.manifest.helpers import NODE_A, instance, write_tree


def _square(x: int) -> int:
    return x * x


def test_map_in_two_forks_and_keeps_order() -> None:
    items = list(range(50))
    assert fanout.can_fork()
    result = fanout.map_in_two(items, [1] * 50, _square, encode=lambda r: r, decode=lambda r: r, min_size=1)
    assert result == [x * x for x in items]


def test_map_in_two_redoes_the_work_of_a_failed_child() -> None:
    parent = os.getpid()

    def work(x: int) -> int:
        if os.getpid() != parent:
            os._exit(3)  # the child dies without sending anything
        return -x

    result = fanout.map_in_two(
        list(range(10)), [1] * 10, work, encode=lambda r: r, decode=lambda r: r, min_size=1
    )
    assert result == [-x for x in range(10)]


def test_small_work_stays_in_process() -> None:
    parent = os.getpid()
    pids = fanout.map_in_two(
        [1, 2], [1, 1], lambda _: os.getpid(), encode=lambda r: r, decode=lambda r: r, min_size=10
    )
    assert pids == [parent, parent]


def test_parallel_load_equals_serial_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files: dict[str, str] = {"nodes.yaml": NODE_A}
    for i in range(40):
        files[f"g{i % 3}/vm{i}.yaml"] = instance(f"vm{i}", mac=f"52:54:00:00:01:{i:02x}")
    files["g1/bad.yaml"] = instance("bad", mac="52:54:00:00:01:00").replace(
        "128M", "12X"
    )  # duplicate MAC too
    write_tree(tmp_path, files)
    paths = [str(tmp_path)]
    monkeypatch.setattr(parse, "FANOUT_MIN_BYTES", 10**12)
    serial = manifest.load(paths)
    monkeypatch.setattr(parse, "FANOUT_MIN_BYTES", 1)
    parallel = manifest.load(paths)
    assert [str(p) for p in parallel.problems] == [str(p) for p in serial.problems]
    assert len(serial.problems) == 2
    good = [str(tmp_path)]
    (tmp_path / "g1/bad.yaml").unlink()
    assert manifest.load(good).desired == serial_desired(good, monkeypatch)


def serial_desired(paths: list[str], monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(parse, "FANOUT_MIN_BYTES", 10**12)
    return manifest.load(paths).desired
