"""schemacheck decides every document as jsonschema's Draft 2020-12 validator does (schema.py's, with the
ECMA `$`): on examples with exact verdicts, on the repository's manifests, and on generated variations
of valid documents."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifest import schema, schemacheck
from tests.manifest.helpers import NODE_A, instance

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]
CHECK = schemacheck.compile_schema(schema.schema(), schema.ecma_regex)
INSTANCE: dict[str, Any] = yaml.safe_load(instance(extra="  disks:\n    - path: /srv/a.img\n      size: 1G\n"
                                                          "  migration:\n    maxDowntime: 300ms\n"))
NODE: dict[str, Any] = yaml.safe_load(NODE_A)


def _full(document: Any) -> bool:
    return bool(schema._full_validator().is_valid(document))


def _with(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


VERDICTS: list[tuple[str, dict[str, Any], bool]] = [
    ("instance", INSTANCE, True),
    ("node", NODE, True),
    ("vcpus 2.0 is an integer", _with(INSTANCE, ("spec", "vcpus"), 2.0), True),
    ("vcpus 2.5", _with(INSTANCE, ("spec", "vcpus"), 2.5), False),
    ("vcpus true is no integer", _with(INSTANCE, ("spec", "vcpus"), True), False),
    ("vcpus null", _with(INSTANCE, ("spec", "vcpus"), None), True),
    ("vcpus 0", _with(INSTANCE, ("spec", "vcpus"), 0), False),
    ("vcpus 256", _with(INSTANCE, ("spec", "vcpus"), 256), False),
    ("memory 512M", _with(INSTANCE, ("spec", "memory"), "512M"), True),
    ("memory with a final line break", _with(INSTANCE, ("spec", "memory"), "512M\n"), False),
    ("memory 0", _with(INSTANCE, ("spec", "memory"), 0), False),
    ("memory as a list", _with(INSTANCE, ("spec", "memory"), ["512M"]), False),
    ("runStrategy null", _with(INSTANCE, ("spec", "runStrategy"), None), True),
    ("runStrategy unknown", _with(INSTANCE, ("spec", "runStrategy"), "Sometimes"), False),
    ("an unknown spec field", _with(INSTANCE, ("spec", "colour"), "blue"), False),
    ("an unknown top-level field", _with(INSTANCE, ("status",), {}), False),
    ("apiVersion v2", _with(INSTANCE, ("apiVersion",), "reconciler/v2"), False),
    ("a Node with an instance's spec", _with(INSTANCE, ("kind",), "Node"), False),
    ("kind unknown", _with(INSTANCE, ("kind",), "Pod"), False),
    ("a label value with a space", _with(INSTANCE, ("metadata", "labels"), {"tier": "a b"}), False),
    ("a label key too long", _with(INSTANCE, ("metadata", "labels"), {"k" * 254: "x"}), False),
    ("an integer label key", _with(INSTANCE, ("metadata", "labels"), {1: "x"}), False),
    ("a name with a final line break", _with(INSTANCE, ("metadata", "name"), "web1\n"), False),
    ("a name of 64 characters", _with(INSTANCE, ("metadata", "name"), "a" * 64), False),
    ("17 disks", _with(INSTANCE, ("spec", "disks"), [{"path": f"/d{i}"} for i in range(17)]), False),
    ("a disk without a path", _with(INSTANCE, ("spec", "disks"), [{"size": "1G"}]), False),
    ("a disk with an empty path", _with(INSTANCE, ("spec", "disks"), [{"path": ""}]), False),
    ("disks null", _with(INSTANCE, ("spec", "disks"), None), True),
    ("maxBandwidth 0", _with(INSTANCE, ("spec", "migration"), {"maxBandwidth": 0}), True),
    ("completionTimeoutPerGiB 0", _with(INSTANCE, ("spec", "migration"), {"completionTimeoutPerGiB": 0}),
     False),
    ("migrationPorts first 1023", _with(NODE, ("spec", "migrationPorts", "first"), 1023), False),
    ("migrationPorts without last", _with(NODE, ("spec", "migrationPorts"), {"first": 50000}), False),
    ("spec a list", _with(INSTANCE, ("spec",), []), False),
    ("metadata without a name", _with(INSTANCE, ("metadata",), {}), False),
]


@pytest.mark.parametrize(("what", "document", "valid"), VERDICTS, ids=[v[0] for v in VERDICTS])
def test_verdicts(what: str, document: dict[str, Any], valid: bool) -> None:
    assert CHECK is not None
    assert CHECK(document) is valid
    assert CHECK(document) is valid  # remembered verdicts are the same
    assert _full(document) is valid


def test_every_manifest_in_the_repository_is_decided_as_jsonschema_decides_it() -> None:
    assert CHECK is not None
    paths = [*ROOT.glob("manifests/**/*.yaml"), *ROOT.glob("contrib/**/*.yaml"),
             *ROOT.glob("tests/reliability/corpus/**/*.yaml")]
    documents = []
    for path in paths:
        try:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
    assert documents
    for document in documents:
        assert CHECK(document) == _full(document), document


def test_a_keyword_it_does_not_implement_leaves_the_decision_to_fastjsonschema() -> None:
    unknown_keyword = {"type": "object", "patternProperties": {"^x": {}}}
    assert schemacheck.compile_schema(unknown_keyword, schema.ecma_regex) is None
    assert schemacheck.compile_schema({"$ref": "http://example.com/s"}, schema.ecma_regex) is None


LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False), st.sampled_from([
        "", "x", "512M", "1.5G", "300ms", "2m", "10x", "node-a", "Node-A", "web1\n", "/srv/x", "qcow2",
        "virtio", "bridge", "user", "br0", "a" * 64, "Always", "Halted", "live", "52:54:00:00:00:01",
        "uefi", "kvm", "127.0.0.1", "Instance", "Node", "Defaults", "reconciler/v1"]),
    st.lists(st.just("x"), max_size=2), st.just({}), st.just({"path": "/x"}),
)
FIELDS = st.sampled_from([
    ("spec", "memory"), ("spec", "vcpus"), ("spec", "maxVcpus"), ("spec", "node"), ("spec", "runStrategy"),
    ("spec", "disks"), ("spec", "disks", 0, "path"), ("spec", "disks", 0, "size"),
    ("spec", "disks", 0, "bus"),
    ("spec", "nics", 0, "mac"), ("spec", "nics", 0, "mode"), ("spec", "nics", 0, "bridge"), ("spec", "nics"),
    ("spec", "migration"), ("spec", "migration", "maxDowntime"), ("spec", "migration", "mode"),
    ("spec", "shutdownTimeout"), ("spec", "kernel"), ("spec", "vnc"), ("spec", "qemuExtraArgs"),
    ("spec", "cloudInit"), ("spec", "unknown"), ("metadata", "name"), ("metadata", "labels"),
    ("metadata", "labels", "tier"), ("metadata", "other"), ("kind",), ("apiVersion",), ("spec",),
    ("metadata",),
])
NODE_FIELDS = st.sampled_from([
    ("spec", "stateDir"), ("spec", "accelerator"), ("spec", "migrationPorts"),
    ("spec", "migrationPorts", "last"), ("spec", "memory"), ("spec", "address"), ("spec", "ssh"),
    ("spec", "qemuBinary"), ("kind",), ("spec", "x"),
])


@SETTINGS
@given(st.lists(st.tuples(FIELDS, LEAVES), max_size=4), st.lists(st.tuples(NODE_FIELDS, LEAVES), max_size=3))
def test_changed_documents_are_decided_as_jsonschema_decides_them(
    changes: list[tuple[tuple[str | int, ...], Any]], node_changes: list[tuple[tuple[str | int, ...], Any]]
) -> None:
    assert CHECK is not None
    for base, edits in ((INSTANCE, changes), (NODE, node_changes)):
        document = copy.deepcopy(base)
        for path, value in edits:
            try:
                document = _with(document, path, copy.deepcopy(value))
            except (KeyError, IndexError, TypeError):
                continue  # the path no longer exists after an earlier change
        assert CHECK(document) == _full(document), document
