"""manifest.origin: where a field is written (its own document, or the Defaults one), as file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import manifest
from reconciler.manifest import origin
from reconciler.model import FieldRef, Kind

NODES = """\
apiVersion: reconciler/v1
kind: Node
metadata: {name: a}
spec: {stateDir: /srv/a}
---
apiVersion: reconciler/v1
kind: Node
metadata: {name: b}
spec:
  stateDir: /srv/b
  qemuBinary: /opt/qemu
  address: 127.0.0.2
"""
DEFAULTS = """\
apiVersion: reconciler/v1
kind: Defaults
metadata: {name: defaults}
spec:
  kernel:
    path: /k/vmlinuz
    root: /dev/ram0
"""
VMS = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: inherits}
spec: {node: a, memory: 64M}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: own}
spec:
  node: b
  memory: 64M
  kernel:
    root: /dev/vda
    initrd: /k/initrd
  disks:
    - path: /d/one.img
    - {path: /d/two.img}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "nodes.yaml").write_text(NODES)
    (tmp_path / "defaults.yaml").write_text(DEFAULTS)
    (tmp_path / "vms.yaml").write_text(VMS)
    return tmp_path


CASES = [
    (Kind.INSTANCE, "inherits", ("spec", "kernel", "path"), "defaults.yaml:6:5"),
    (Kind.INSTANCE, "own", ("spec", "kernel", "path"), "defaults.yaml:6:5"),  # merged: path from Defaults
    (Kind.INSTANCE, "own", ("spec", "kernel", "initrd"), "vms.yaml:14:5"),
    (Kind.INSTANCE, "own", ("spec", "disks", 0, "path"), "vms.yaml:16:7"),
    (Kind.INSTANCE, "own", ("spec", "disks", 1, "path"), "vms.yaml:17:8"),
    (Kind.NODE, "b", ("spec", "qemuBinary"), "nodes.yaml:11:3"),
    (Kind.NODE, "a", ("spec", "qemuBinary"), "nodes.yaml:1:1"),  # the default: the document's start
    (Kind.INSTANCE, "own", ("spec", "nics", 0, "bridge"), "vms.yaml:6:1"),  # written nowhere
]


@pytest.mark.parametrize(("kind", "name", "path", "expected"), CASES)
def test_locate_fields(tree: Path, kind: Kind, name: str, path: tuple[str | int, ...], expected: str) -> None:
    desired = manifest.load([str(tree)]).desired
    assert desired is not None
    ref = FieldRef(kind, name, path)
    files = origin.files_to_read([ref], desired.sources)
    texts = {f: Path(f).read_text() for f in files}
    (found,) = origin.locate_fields([ref], desired.sources, texts).values()
    assert str(found) == f"{tree}/{expected}"


def test_files_to_read_are_the_objects_and_the_defaults(tree: Path) -> None:
    desired = manifest.load([str(tree)]).desired
    assert desired is not None
    refs = [FieldRef(Kind.NODE, "a", ("spec", "qemuBinary"))]
    assert origin.files_to_read(refs, desired.sources) == (f"{tree}/defaults.yaml", f"{tree}/nodes.yaml")


def test_unknown_object_and_unreadable_file(tree: Path) -> None:
    desired = manifest.load([str(tree)]).desired
    assert desired is not None
    gone = FieldRef(Kind.INSTANCE, "nope", ("spec", "kernel", "path"))
    own = FieldRef(Kind.INSTANCE, "own", ("spec", "kernel", "initrd"))
    found = origin.locate_fields([gone, own], desired.sources, {})  # no text: the document's start
    assert {ref: str(at) for ref, at in found.items()} == {own: f"{tree}/vms.yaml:6:1"}
