"""The schema's patterns mean the same to editors (ECMA-262) and to `validate` (Python).

In Python's `re`, `$` also matches before a final newline, so `machine: "pc\\n"` passed the schema check
and failed at start (issue 11). Every pattern of the schema is listed here with a field that uses it: a
good value passes `validate`, the same value with a trailing newline is refused at that field, and the
two validators (the fast check and the explaining one) agree. Where node is installed, JavaScript's own
RegExp checks the same values, so the schema's patterns are proven to be read the same way there.
"""

# ruff: noqa: E501  (table rows are kept one per line)
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import manifest
from reconciler.manifest import schema
from reconciler.manifest.problems import field_path
from tests.manifest.helpers import NODE_A, write_tree

# Every schema location that has a pattern -> (kind of document, where in it, a good value).
# The location of a $defs entry that Defaults refers to counts once (Defaults shares it).
PATTERNS: dict[str, tuple[str, tuple[str | int, ...], str]] = {
    "$defs/metadata/properties/name": ("Instance", ("metadata", "name"), "web1"),
    "$defs/metadata/properties/labels/propertyNames": ("Instance", ("metadata", "labels", "*"), "tier"),
    "$defs/metadata/properties/labels/additionalProperties": ("Instance", ("metadata", "labels", "tier"), "web"),
    "$defs/instanceSpec/properties/node": ("Instance", ("spec", "node"), "node-a"),
    "$defs/instanceSpec/properties/memory": ("Instance", ("spec", "memory"), "512M"),
    "$defs/instanceSpec/properties/maxMemory": ("Instance", ("spec", "maxMemory"), "1G"),
    "$defs/instanceSpec/properties/machine": ("Instance", ("spec", "machine"), "q35"),
    "$defs/instanceSpec/properties/cpuModel": ("Instance", ("spec", "cpuModel"), "qemu64,+ssse3"),
    "$defs/instanceSpec/properties/shutdownTimeout": ("Instance", ("spec", "shutdownTimeout"), "30s"),
    "$defs/nodeSpec/properties/memory": ("Node", ("spec", "memory"), "2G"),
    "$defs/nodeSpec/properties/ssh/properties/host": ("Node", ("spec", "ssh", "host"), "198.18.0.12"),
    "$defs/nodeSpec/properties/ssh/properties/user": ("Node", ("spec", "ssh", "user"), "ops"),
    "$defs/nodeSpec/properties/ssh/properties/connectTimeout": (
        "Node", ("spec", "ssh", "connectTimeout"), "10s"),
    "$defs/nodeSpec/properties/ssh/properties/persist": ("Node", ("spec", "ssh", "persist"), "60s"),
    "$defs/nic/properties/bridge": ("Instance", ("spec", "nics", 0, "bridge"), "br0"),
    "$defs/disk/properties/size": ("Instance", ("spec", "disks", 0, "size"), "64M"),
    "$defs/migration/properties/maxBandwidth": ("Instance", ("spec", "migration", "maxBandwidth"), "1G"),
    "$defs/migration/properties/maxDowntime": ("Instance", ("spec", "migration", "maxDowntime"), "300ms"),
    "$defs/migration/properties/completionTimeoutPerGiB": (
        "Instance", ("spec", "migration", "completionTimeoutPerGiB"), "150s"),
    "$defs/migration/properties/progressTimeout": ("Instance", ("spec", "migration", "progressTimeout"), "2m"),
}


def _patterns(node: Any, at: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield at.strip("/"), node["pattern"]
        for key, value in node.items():
            yield from _patterns(value, f"{at}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _patterns(value, f"{at}/{i}")


ALL = dict(_patterns(schema.schema()))


def test_every_pattern_is_listed() -> None:
    assert sorted(ALL) == sorted(PATTERNS)


@pytest.mark.parametrize("pattern", sorted(set(ALL.values())))
def test_patterns_use_nothing_that_differs_between_ecma_and_python(pattern: str) -> None:
    # \d \w \s \b are Unicode-aware in Python's str patterns, ASCII in ECMA without the u flag
    assert not any(escape in pattern for escape in ("\\d", "\\w", "\\s", "\\b", "\\Z", "\\A", "(?"))
    assert pattern.startswith("^") and pattern.endswith("$")


def _document(kind: str, where: tuple[str | int, ...], value: str) -> str:
    """A manifest that is valid except for what `value` makes of the field at `where`."""
    if kind == "Node":
        doc: dict[str, Any] = {"apiVersion": "reconciler/v1", "kind": "Node", "metadata": {"name": "node-b"},
                               "spec": {"stateDir": "/var/lib/reconciler/node-b", "accelerator": "tcg",
                                        "migrationPorts": {"first": 50000, "last": 50010}}}
    else:
        doc = {"apiVersion": "reconciler/v1", "kind": "Instance", "metadata": {"name": "web1"},
               "spec": {"node": "node-a", "memory": "128M",
                        "nics": [{"mac": "52:54:00:00:00:01", "mode": "bridge", "bridge": "br0"}],
                        "disks": [{"path": "/srv/web1.raw"}]}}
    parent: Any = doc
    for part in where[:-1]:
        parent = parent.setdefault(part, {}) if isinstance(part, str) else parent[part]
    if where[-1] == "*":  # a key: the label key itself
        parent[value] = "x"
    else:
        parent[where[-1]] = value
    return json.dumps(doc)  # JSON is YAML; json.dumps escapes the newline


def _load(tmp_path: Path, kind: str, where: tuple[str | int, ...], value: str) -> list[str]:
    write_tree(tmp_path, {"node.yaml": NODE_A, "doc.yaml": _document(kind, where, value)})
    return [str(p) for p in manifest.load([str(tmp_path)]).problems]


@pytest.mark.parametrize("location", sorted(PATTERNS))
def test_good_value_passes_and_trailing_newline_is_refused(tmp_path: Path, location: str) -> None:
    kind, where, good = PATTERNS[location]
    assert _load(tmp_path, kind, where, good) == []
    problems = _load(tmp_path, kind, where, good + "\n")
    field = field_path(where[:-1] if where[-1] == "*" else where)  # a bad key is reported at its mapping
    assert len(problems) == 1 and f": {field}: " in problems[0], problems
    pattern = ALL[location]
    assert schema.ecma_regex(pattern).search(good)
    assert schema.ecma_regex(pattern).search(good + "\n") is None


def test_the_two_validators_agree_on_trailing_newlines() -> None:
    full = schema._full_validator()
    for location, (kind, where, good) in sorted(PATTERNS.items()):
        for value in (good, good + "\n"):
            doc = json.loads(_document(kind, where, value))
            assert schema._fast_check()(doc) == full.is_valid(doc) == (value == good), (location, value)
            assert (schema.validate(doc) == []) == (value == good)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_reads_every_pattern_the_same_way() -> None:
    """ECMA-262 itself, as editors run it (with and without the u flag), against the Python reading."""
    values = [v for _, _, good in PATTERNS.values() for v in (good, good + "\n", "\n" + good, good + " ")]
    values += ["", "a\nb", "é", "١٢", "web-1", "-x", "x-", "1.5G", "52:54:00:00:00:01", "host,+vmx"]
    cases = [(pattern, value) for pattern in sorted(set(ALL.values())) for value in values]
    script = (
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(cases.map(([p, v]) => [new RegExp(p).test(v), new RegExp(p, 'u').test(v)])));"
    )
    done = subprocess.run(["node", "-e", script], input=json.dumps(cases), capture_output=True, text=True,
                          check=True, timeout=60)
    javascript = json.loads(done.stdout)
    python = [[bool(schema.ecma_regex(p).search(v))] * 2 for p, v in cases]
    mismatched = [(case, js, py) for case, js, py in zip(cases, javascript, python, strict=True) if js != py]
    assert mismatched == []
