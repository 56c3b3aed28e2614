"""Instances built by the parse workers (prebuild.py, the loader's path) give exactly what `assemble`
gives when it builds them itself: same DesiredState, same problems and warnings, with and without the
fork, whatever the Defaults document says, and when the first look misses the Defaults document."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest

from reconciler import manifest
from reconciler.manifest import loader, parse, prebuild
from tests.manifest.helpers import NODE_A, instance, write_tree

DEFAULTS = """\
apiVersion: reconciler/v1
kind: Defaults
metadata:
  name: defaults
spec:
  vcpus: 2
  shutdownTimeout: 30s
  migration:
    maxDowntime: 300ms
"""


def _tree(defaults: dict[str, str]) -> dict[str, str]:
    files: dict[str, str] = {"nodes.yaml": NODE_A, **defaults}
    files["vms.yaml"] = "---\n".join(
        instance(f"vm{i}", mac=f"52:54:00:00:02:{i:02x}", extra="  migration:\n    maxDowntime: 1s\n" if i % 2
                 else "") for i in range(30))
    files["odd.yaml"] = "---\n".join([
        instance("bad-memory", mac="52:54:00:00:03:01").replace("128M", "12X"),  # a partial build
        instance("dup", mac="52:54:00:00:03:02"), instance("dup", mac="52:54:00:00:03:03"),
        instance("Bad_Name", mac="52:54:00:00:03:04"),
        instance("samemac", mac="52:54:00:00:02:01"),  # vm1's MAC
        instance("nonode", node="node-z", mac="52:54:00:00:03:05"),
        instance("unknown", mac="52:54:00:00:03:06", extra="  colour: blue\n"),  # cut, still built
    ])
    return files


TREES = {
    "no Defaults": {},
    "Defaults": {"defaults.yaml": DEFAULTS},
    "schema-invalid Defaults": {"defaults.yaml": DEFAULTS.replace("vcpus: 2", "vcpus: many")},
    "two Defaults": {"defaults.yaml": DEFAULTS, "more.yaml": DEFAULTS.replace("name: defaults", "name: d2")},
    "Defaults spelled with an escape": {"defaults.yaml": DEFAULTS.replace("kind: Defaults",
                                                                          'kind: "\\x44efaults"')},
    "valid tree with Defaults": {"defaults.yaml": DEFAULTS,
                                 "odd.yaml": instance("x", mac="52:54:00:00:04:01")},
}


@pytest.mark.parametrize("fork", [False, True])
@pytest.mark.parametrize("tree", list(TREES), ids=list(TREES))
def test_loading_with_prebuilt_instances_equals_assembling_them(
    tree: str, fork: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _tree(TREES[tree])
    if tree == "valid tree with Defaults":
        files["odd.yaml"] = TREES[tree]["odd.yaml"]
    write_tree(tmp_path, files)
    paths = [str(tmp_path)]
    monkeypatch.setattr(parse, "FANOUT_MIN_BYTES", 1 if fork else 10**12)
    loaded = manifest.load(paths)
    monkeypatch.setattr(parse, "FANOUT_MIN_BYTES", 10**12)
    monkeypatch.setattr(loader, "_parse_and_build", parse.parse_paths)  # assemble builds every instance
    expected = manifest.load(paths)
    assert [str(p) for p in loaded.problems] == [str(p) for p in expected.problems]
    assert loaded.warnings == expected.warnings
    assert loaded.files == expected.files
    assert loaded.desired == expected.desired
    assert (loaded.desired is not None) == (tree == "valid tree with Defaults")


def test_the_escaped_Defaults_document_is_found_by_the_whole_parse() -> None:
    text = DEFAULTS.replace("kind: Defaults", 'kind: "\\x44efaults"')
    assert b"Defaults" not in text.encode()
    parsed = parse.parse_file("d.yaml", text.encode())
    assert prebuild.defaults_context(parsed.documents).document == ("d.yaml", 0)
    assert prebuild.defaults_context([]) == prebuild.DefaultsContext(None)


def test_prebuilt_files_pickle_through_the_reductions_unchanged() -> None:
    text = "---\n".join([DEFAULTS, instance("a", mac="52:54:00:00:05:01"),
                         instance("b", mac="52:54:00:00:05:02")])
    parsed = parse.parse_file("t.yaml", text.encode())
    built = prebuild.prebuilt_file(parsed, prebuild.defaults_context(parsed.documents))
    assert [d.body == {} for d in built.documents] == [False, True, True]
    encoded = [parse._encode(built)]
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = prebuild.dispatch_table()
    pickler.dump(encoded)
    again = parse._decode(pickle.loads(buffer.getvalue())[0])
    assert again == built
    assert [d.built for d in again.documents] == [d.built for d in built.documents]
    instance_spec = again.documents[1].built.instance
    assert instance_spec.run_strategy is built.documents[1].built.instance.run_strategy  # members, not copies
