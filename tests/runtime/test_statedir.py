"""Unit: the state directory is private, writes are atomic, removal touches only our own files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconciler import layout, model, records, statedir
from reconciler.errors import RecordError, StateDirError


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def node(tmp_path: Path) -> model.NodeSpec:
    return model.NodeSpec(name="n1", state_dir=str(tmp_path / "state"))


def test_dirs_0700_and_files_0600(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.json"
    old = os.umask(0)
    try:
        statedir.write_json(target, {"x": 1})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(target) == 0o600
    assert statedir.read_json(target) == {"x": 1}


def test_existing_dir_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "loose"
    d.mkdir(mode=0o755)
    statedir.ensure_dir(d)
    assert _mode(d) == 0o700


def test_atomic_replace_leaves_no_temp_and_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    statedir.atomic_write(target, b"old")
    inode = target.stat().st_ino
    statedir.atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_failed_write_keeps_old_content_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.json"
    statedir.atomic_write(target, b"old")

    def broken_replace(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StateDirError, match="cannot write: No space left on device"):
        statedir.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_read_json_missing_and_garbage(tmp_path: Path) -> None:
    assert statedir.read_json(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StateDirError, match="unreadable"):
        statedir.read_json(tmp_path / "bad.json")


@pytest.mark.parametrize(("content", "pid"), [("123\n", 123), ("", None), ("abc", None), ("0", None),
                                             ("-5", None), ("12 34", None)])
def test_read_pidfile(tmp_path: Path, content: str, pid: int | None) -> None:
    (tmp_path / "qemu.pid").write_text(content)
    assert statedir.read_pidfile(tmp_path / "qemu.pid") == pid
    assert statedir.read_pidfile(tmp_path / "missing.pid") is None


def test_records_and_names(node: model.NodeSpec) -> None:
    assert statedir.instance_names(node) == []
    spec = model.InstanceSpec(name="vm1", memory_mib=16)
    rec = records.AppliedRecord.create(spec, "n1", ("qemu",), "7.2", 1, 2.0, 3.0)
    paths = layout.instance_paths(node, "vm1")
    assert statedir.read_record(paths) is None
    statedir.write_record(paths, rec)
    assert statedir.read_record(paths) == rec
    assert _mode(Path(paths.record)) == 0o600
    assert _mode(Path(paths.dir)) == 0o700
    assert statedir.instance_names(node) == ["vm1"]
    Path(paths.record).write_text('{"format_version": 1}')
    with pytest.raises(RecordError, match=r"record\.json: missing field"):
        statedir.read_record(paths)


def test_remove_instance_files_spares_other_files(node: model.NodeSpec) -> None:
    paths = layout.instance_paths(node, "vm1")
    statedir.ensure_dir(paths.dir)
    for p in (paths.pidfile, paths.record, paths.intent, paths.serial_log, paths.nic_file("tap0")):
        Path(p).write_text("x")
    disk = Path(paths.dir) / "disk.qcow2"
    disk.write_text("precious")
    statedir.remove_instance_files(paths)
    assert sorted(p.name for p in Path(paths.dir).iterdir()) == ["disk.qcow2"]
    disk.unlink()
    Path(paths.record).write_text("x")
    statedir.remove_instance_files(paths)
    assert not Path(paths.dir).exists()
