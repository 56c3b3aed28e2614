"""The daemon's incremental assembly applies the VNC port rule as `validate` does: per node address,
across nodes, and again when only a node changes (its verdict is cached between edits)."""

from __future__ import annotations

from pathlib import Path

from reconciler import manifest
from reconciler.watch.assembly import Assembly


def _node(name: str, address: str = "127.0.0.1") -> str:
    first = 50000 + 100 * int(name[1:])
    return (f"apiVersion: reconciler/v1\nkind: Node\nmetadata: {{name: {name}}}\n"
            f"spec: {{stateDir: /srv/{name}, address: {address}, "
            f"migrationPorts: {{first: {first}, last: {first + 10}}}}}\n")


def _vnc(name: str, node: str, display: int) -> str:
    return (f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
            f"spec: {{node: {node}, memory: 64M, vnc: {{display: {display}}}}}\n")


def test_vnc_clash_across_nodes_sharing_an_address(tmp_path: Path) -> None:
    files: dict[str, manifest.ParsedFile] = {}

    def put(name: str, text: str) -> None:
        path = str(tmp_path / name)
        files[path] = manifest.parse_file(path, text.encode())
        assert not files[path].problems

    asm = Assembly()
    put("nodes.yaml", _node("n1") + "---\n" + _node("n2", "127.0.0.2"))
    put("a.yaml", _vnc("a", "n1", 1))
    put("b.yaml", _vnc("b", "n2", 1))
    asm.update(dict(files))
    assert asm.desired() is not None  # two hosts
    put("c.yaml", _vnc("c", "n2", 5))  # an edit that touches no clash: still consistent
    asm.update(dict(files))
    assert asm.desired() is not None
    put("nodes.yaml", _node("n1") + "---\n" + _node("n2"))  # only the nodes change: now one host
    asm.update(dict(files))
    assert asm.desired() is None
    full = manifest.assemble(list(files.values()))
    assert [str(p) for p in full.problems] == [
        f"{tmp_path}/b.yaml:4:37: instance b: spec.vnc.display: VNC display 1 (port 5901 on 127.0.0.1) "
        f"is also used by instance a on node n1, which has the same address ({tmp_path}/a.yaml:1:1)"
    ]
    put("b.yaml", _vnc("b", "n2", 2))
    asm.update(dict(files))
    assert asm.desired() == manifest.assemble(list(files.values())).desired is not None
