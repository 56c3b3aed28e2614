"""Refreshing from the paths file events named: the same result as a full walk, at a fraction of the cost.

Each operation is applied to a tree, then the cache is refreshed with the paths watchdog would report
(the real paths of the files touched; a directory's own path when a directory is created or removed), and
compared with a fresh cache that walks the tree. A path the cache cannot vouch for makes it walk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.watch import cache as cache_mod
from reconciler.watch.cache import ManifestCache
from reconciler.watch.reconcile import changed_paths
from reconciler.watch.triggers import Trigger, TriggerSource

NODE = "apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\nspec: {stateDir: /srv/n1}\n"


def inst(name: str, memory: int = 64) -> str:
    return (f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
            f"spec: {{node: n1, memory: {memory}M}}\n")


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "RACY_SECONDS", 0.0)


def _state(snap: cache_mod.Snapshot) -> tuple[object, ...]:
    desired = snap.desired
    instances = sorted(desired.instances.items()) if desired is not None else None
    return instances, snap.files, [(e.path, e.problems, e.held) for e in snap.errors]


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    (root / "sub").mkdir(parents=True)
    (root / "node.yaml").write_text(NODE)
    (root / "a.yaml").write_text(inst("a"))
    (root / "sub" / "b.yaml").write_text(inst("b"))
    return root


def test_an_edit_is_seen_without_walking_or_statting_the_rest(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    c = ManifestCache([str(root)])
    c.refresh()
    (root / "a.yaml").write_text(inst("a", 128))
    walked: list[object] = []
    monkeypatch.setattr(cache_mod, "discover", lambda roots: walked.append(roots))  # must not be called
    stats: list[str] = []
    real_stamp = cache_mod._stamp
    monkeypatch.setattr(cache_mod, "_stamp", lambda p: stats.append(p) or real_stamp(p))
    snap = c.refresh({str((root / "a.yaml").resolve())})
    assert walked == [] and stats == [str(root / "a.yaml")]
    assert snap.desired is not None and snap.desired.instances["a"].memory_mib == 128
    assert snap.reparsed == (str(root / "a.yaml"),)


def test_no_file_event_means_no_file_is_looked_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    c = ManifestCache([str(root)])
    c.refresh()
    monkeypatch.setattr(cache_mod, "_stamp", lambda p: pytest.fail(f"stat of {p}"))
    assert c.refresh(frozenset()).files == 3


def test_paths_it_cannot_vouch_for_make_it_walk(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    c = ManifestCache([str(root)])
    c.refresh()
    (root / "new").mkdir()
    (root / "new" / "c.yaml").write_text(inst("c"))
    snap = c.refresh({str((root / "new").resolve())})  # a directory event: only a walk finds c.yaml
    assert snap.desired is not None and "c" in snap.desired.instances
    outside = c.refresh({str(tmp_path / "elsewhere.yaml")})
    assert outside.files == 4


def test_changed_paths_from_triggers() -> None:
    f = TriggerSource.FILE
    assert changed_paths([Trigger(f, "", ("/m/a.yaml",)), Trigger(f, "", ("/m/b.yaml",))]) == {
        "/m/a.yaml", "/m/b.yaml"}
    assert changed_paths([Trigger(TriggerSource.QEMU), Trigger(TriggerSource.BACKOFF)]) == frozenset()
    assert changed_paths([Trigger(f, "", ("/m/a.yaml",)), Trigger(TriggerSource.RESYNC)]) is None
    assert changed_paths([Trigger(f, "re-armed")]) is None
    assert changed_paths([Trigger(TriggerSource.STARTUP)]) is None


OPS = st.lists(st.tuples(st.sampled_from(["write", "edit", "delete", "mkdir", "rmdir", "hidden", "text",
                                          "broken"]),
                         st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["", "sub", "deep/er"])),
               min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_hinted_refresh_equals_a_full_walk(tmp_path_factory: pytest.TempPathFactory,
                                           ops: list[tuple[str, str, str]]) -> None:
    root = _tree(tmp_path_factory.mktemp("h"))
    hinting, walking = ManifestCache([str(root)]), ManifestCache([str(root)])  # the same history
    hinting.refresh()
    walking.refresh()
    for op, name, where in ops:
        d = root / where if where else root
        events = _apply(op, name, d)
        hinted = hinting.refresh(frozenset(str(Path(e).resolve()) for e in events))
        assert _state(hinted) == _state(walking.refresh()), (op, name, where)


def _apply(op: str, name: str, d: Path) -> list[Path]:
    """Do `op`; return the paths inotify would name."""
    f = d / f"{name}.yaml"
    if op in ("write", "edit", "broken"):
        created = [p for p in [*reversed(f.parents)] if not p.exists()]
        f.parent.mkdir(parents=True, exist_ok=True)
        text = inst(name, 64 if op == "write" else 96) if op != "broken" else "kind: [unclosed\n"
        f.write_text(text)
        return [created[0]] if created else [f]  # a new directory is reported, not the file in it
    if op == "delete":
        if f.exists():
            f.unlink()
        return [f]
    if op == "mkdir":
        new = d / "fresh"
        new.mkdir(parents=True, exist_ok=True)
        (new / f"{name}.yaml").write_text(inst(f"{name}x"))
        return [new]
    if op == "rmdir":
        if d.exists() and d.name in ("sub", "er", "deep"):
            shutil.rmtree(d)
            return [d]
        return []
    if op == "hidden":
        d.mkdir(parents=True, exist_ok=True)
        (d / f".{name}.yaml").write_text(inst(f"h{name}"))
        return [d / f".{name}.yaml"]
    (d / f"{name}.txt").parent.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.txt").write_text("not a manifest")
    return [d / f"{name}.txt"]


def test_an_edit_rebuilds_only_the_documents_it_changed(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    many = root / "many.yaml"
    many.write_text("---\n".join(inst(n) for n in ("x", "y", "z")))
    c = ManifestCache([str(root)])
    before = c.refresh().desired
    assert before is not None
    many.write_text("---\n".join(inst(n, 128 if n == "y" else 64) for n in ("x", "y", "z")))
    snap = c.refresh({str(many.resolve())})
    after = snap.desired
    assert after is not None and snap.reparsed == (str(many),) and snap.rebuilt == 1
    assert after.instances["x"] is before.instances["x"] and after.instances["z"] is before.instances["z"]
    assert after.instances["y"].memory_mib == 128 and after.spec_hashes["y"] != before.spec_hashes["y"]
    assert after.spec_hashes["x"] == before.spec_hashes["x"]
    assert after == ManifestCache([str(root)]).refresh().desired
    defaults = root / "defaults.yaml"  # every instance depends on the Defaults: all are built again
    defaults.write_text("apiVersion: reconciler/v1\nkind: Defaults\nmetadata: {name: d}\nspec: {vcpus: 2}\n")
    again = c.refresh({str(defaults.resolve())}).desired
    assert again is not None and again.instances["x"] is not after.instances["x"]
    assert {s.vcpus for s in again.instances.values()} == {2}
    assert again == ManifestCache([str(root)]).refresh().desired


def test_seed_files_stay_read_in_when_another_file_changes(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "ud").write_text("#cloud-config\n")
    seeded = inst("s").replace("memory: 64M}", "memory: 64M, cloudInit: {userDataFile: ud}}")
    (root / "s.yaml").write_text(seeded)
    c = ManifestCache([str(root)])
    first = c.refresh().desired
    assert first is not None and first.instances["s"].cloud_init is not None
    assert first.instances["s"].cloud_init.user_data == "#cloud-config\n"
    (root / "a.yaml").write_text(inst("a", 128))
    after = c.refresh({str((root / "a.yaml").resolve())}).desired
    assert after is not None and after.instances["a"].memory_mib == 128
    assert after.instances["s"] == first.instances["s"]
    (root / "ud").write_text("#cloud-config\nhostname: s\n")  # not a manifest: the refresh walks
    edited = c.refresh({str((root / "ud").resolve())}).desired
    assert edited is not None and edited.instances["s"].cloud_init is not None
    assert edited.instances["s"].cloud_init.user_data == "#cloud-config\nhostname: s\n"


def test_a_broken_file_stays_reported_while_others_are_edited(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    c = ManifestCache([str(root)])
    c.refresh()
    (root / "a.yaml").write_text("kind: [unclosed\n")
    broken = c.refresh({str((root / "a.yaml").resolve())})
    assert [e.path for e in broken.errors] == [str(root / "a.yaml")] and broken.errors[0].held
    (root / "sub" / "b.yaml").write_text(inst("b", 96))
    later = c.refresh({str((root / "sub" / "b.yaml").resolve())})
    assert later.errors == broken.errors and later.desired is not None
    assert later.desired.instances["b"].memory_mib == 96 and later.desired.instances["a"].memory_mib == 64
    assert c.refresh(frozenset()).errors == broken.errors  # nothing named: nothing moves
    (root / "a.yaml").write_text(inst("a", 32))
    fixed = c.refresh({str((root / "a.yaml").resolve())})
    assert fixed.errors == () and fixed.desired is not None and fixed.desired.instances["a"].memory_mib == 32
