"""The daemon's manifest cache: only changed files are re-parsed, a broken file keeps its last good version,
pruning is suspended while a file is broken, and incremental assembly equals `manifest.assemble`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import manifest
from reconciler.watch import cache as cache_mod
from reconciler.watch.cache import ManifestCache

NODE = "apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\nspec: {stateDir: /srv/n1}\n"


def inst(name: str, memory: str = "64M", node: str = "n1", extra: str = "") -> str:
    return (f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
            f"spec: {{node: {node}, memory: {memory}{extra}}}\n")


def write(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    write(d / "node.yaml", NODE)
    write(d / "a.yaml", inst("a"))
    write(d / "b.yaml", inst("b") + "---\n" + inst("c"))
    return d


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests rewrite files within milliseconds; hashing decides, not the timestamp window."""
    monkeypatch.setattr(cache_mod, "RACY_SECONDS", 0.0)


def test_first_refresh_parses_everything_then_nothing(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    snap = c.refresh()
    assert snap.desired is not None and sorted(snap.desired.instances) == ["a", "b", "c"]
    assert sorted(os.path.basename(p) for p in snap.reparsed) == ["a.yaml", "b.yaml", "node.yaml"]
    again = c.refresh()
    assert again.reparsed == () and again.rebuilt == 0
    assert again.desired is snap.desired  # nothing changed: the same value


def test_only_the_changed_file_is_reparsed(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    write(tree / "a.yaml", inst("a", "128M"))
    snap = c.refresh()
    assert [os.path.basename(p) for p in snap.reparsed] == ["a.yaml"]
    assert snap.rebuilt == 1
    assert snap.desired is not None and snap.desired.instances["a"].memory_mib == 128


def test_touch_without_change_is_not_reparsed(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    os.utime(tree / "a.yaml", ns=(1, 1))
    snap = c.refresh()
    assert snap.reparsed == () and snap.rebuilt == 0


def test_racy_stamp_is_rehashed(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same size, same mtime (coarse clocks): a file read within the racy window is hashed again."""
    monkeypatch.setattr(cache_mod, "RACY_SECONDS", 3600.0)
    c = ManifestCache([str(tree)])
    c.refresh()
    st = os.stat(tree / "a.yaml")
    write(tree / "a.yaml", inst("a", "96M"))  # same length as 64M
    os.utime(tree / "a.yaml", ns=(st.st_atime_ns, st.st_mtime_ns))
    snap = c.refresh()
    assert snap.desired is not None and snap.desired.instances["a"].memory_mib == 96


@pytest.mark.parametrize("broken", [
    "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: a}\nspec: {node: n1, memory: lots}\n",
    "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: a}\nspec: {node: n1, mem",  # truncated
    "\0binary",
])
def test_broken_file_keeps_last_good(tree: Path, broken: str) -> None:
    c = ManifestCache([str(tree)])
    good = c.refresh()
    assert good.desired is not None
    write(tree / "a.yaml", broken)
    write(tree / "b.yaml", inst("b", "256M") + "---\n" + inst("c"))  # the rest still reconciles
    snap = c.refresh()
    assert snap.desired is not None
    assert snap.desired.instances["a"] == good.desired.instances["a"]
    assert snap.desired.instances["b"].memory_mib == 256
    assert snap.degraded
    [err] = snap.errors
    assert err.path.endswith("a.yaml") and err.held and err.problems
    assert all("a.yaml" in line for line in err.problems)
    write(tree / "a.yaml", inst("a", "32M"))
    fixed = c.refresh()
    assert not fixed.degraded and fixed.desired is not None
    assert fixed.desired.instances["a"].memory_mib == 32


def test_unreadable_file_keeps_last_good(tree: Path) -> None:
    if os.geteuid() == 0:
        target = tree / "a.yaml"
        target.unlink()
        target.symlink_to(tree / "nowhere.yaml")  # root reads everything: a broken symlink instead
    else:
        (tree / "a.yaml").chmod(0)
    c = ManifestCache([str(tree)])
    c._good = {}  # first load: nothing to hold
    snap = c.refresh()
    assert snap.desired is not None and "a" not in snap.desired.instances
    assert [e.held for e in snap.errors] == [False]


def test_broken_since_is_kept_until_fixed(tree: Path) -> None:
    clock = iter([100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0])
    c = ManifestCache([str(tree)], clock=lambda: next(clock))
    c.refresh()
    write(tree / "a.yaml", "kind: [")
    first = c.refresh().errors[0].since
    assert c.refresh().errors[0].since == first
    write(tree / "a.yaml", inst("a"))
    assert c.refresh().errors == ()


def test_new_broken_file_contributes_nothing(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    write(tree / "new.yaml", inst("d", "lots"))
    snap = c.refresh()
    assert snap.desired is not None and "d" not in snap.desired.instances
    assert [(os.path.basename(e.path), e.held) for e in snap.errors] == [("new.yaml", False)]


def test_cross_file_conflict_holds_back_the_change(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    write(tree / "z.yaml", inst("a", "512M"))  # declares `a` a second time
    snap = c.refresh()
    assert snap.desired is not None and snap.desired.instances["a"].memory_mib == 64
    [err] = snap.errors
    assert err.path.endswith("z.yaml") and not err.held
    assert "declared twice" in err.problems[0]


def test_deleting_a_needed_node_file_is_held(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    (tree / "node.yaml").unlink()
    snap = c.refresh()
    assert snap.desired is not None and "n1" in snap.desired.nodes
    [err] = snap.errors
    assert err.path.endswith("node.yaml") and err.held and "still needs it" in err.problems[0]


def test_deleting_a_file_removes_its_instances(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    (tree / "a.yaml").unlink()
    snap = c.refresh()
    assert snap.desired is not None and sorted(snap.desired.instances) == ["b", "c"]
    assert not snap.degraded


def test_defaults_change_rebuilds_all(tree: Path) -> None:
    c = ManifestCache([str(tree)])
    c.refresh()
    write(tree / "defaults.yaml",
          "apiVersion: reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec: {vcpus: 2, prune: true}\n")
    snap = c.refresh()
    assert snap.desired is not None and snap.desired.prune
    assert {s.vcpus for s in snap.desired.instances.values()} == {2}
    assert snap.rebuilt == 4


# --- incremental assembly == manifest.assemble ----------------------------------------------------------

FILES = ["f0.yaml", "f1.yaml", "f2.yaml", "f3.yaml"]
NODES = NODE + ("---\napiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n2}\n"
                "spec: {stateDir: /srv/n2, migrationPorts: {first: 50000, last: 50010}}\n")
GOOD = [inst("a"), inst("a", "128M"), inst("b", node="n2"), inst("h"), inst("i", node="n2"), inst("j"),
        inst("d", extra=", nics: [{mac: '52:54:00:00:00:01', mode: user}]"),
        inst("v", node="n2", extra=", vnc: {display: 3}"),
        "apiVersion: reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec: {vcpus: 3}\n"]
CLASHING = [
    "apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n3}\nspec: {stateDir: /srv/n1}\n",
    inst("c", node="n9"),
    inst("e", extra=", nics: [{mac: '52:54:00:00:00:01', mode: user}]"),
    inst("f", extra=", cpuModel: host"),
    inst("g", extra=", disks: [{path: /x/g.img}], vnc: {display: 1}"),
    inst("k", extra=", disks: [{path: /x/g.img}], vnc: {display: 1}"),
    inst("l", node="n2", extra=", vnc: {display: 2}"),  # n1 and n2 share an address: one host
    inst("m", extra=", vnc: {display: 2}"),
    "apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n4}\n"
    "spec: {stateDir: /srv/n4, migrationPorts: {first: 5901, last: 5903}}\n",  # holds displays 1-3
]
DOC = st.one_of(*[st.sampled_from(GOOD)] * 3, st.sampled_from(CLASHING))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FILES), st.lists(DOC, max_size=3)), min_size=1, max_size=10))
def test_incremental_assembly_equals_full(tmp_path_factory: pytest.TempPathFactory,
                                          edits: list[tuple[str, list[str]]]) -> None:
    from reconciler.watch.assembly import Assembly

    d = tmp_path_factory.mktemp("h")
    asm = Assembly()
    nodes = str(d / "nodes.yaml")
    files = {nodes: manifest.parse_file(nodes, NODES.encode())}
    for name, docs in edits:
        path = str(d / name)
        if docs:
            parsed = manifest.parse_file(path, "---\n".join(docs).encode())
            assert not parsed.problems
            files[path] = parsed
        else:
            files.pop(path, None)
        asm.update(dict(files))
        full = manifest.assemble(list(files.values()))
        assert asm.desired() == full.desired
