"""Property tests: whatever the bytes, loading gives a result or one-line problems naming the file.

Random bytes, random YAML-ish text and random mutations of valid manifests must never raise, and every
problem must be one line that starts with the file's path.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifest import assemble, parse_file
from tests.manifest.helpers import NODE_A, instance

PATH = "dir/x.yaml"
DEFAULTS = """\
apiVersion: reconciler/v1
kind: Defaults
metadata: {name: defaults}
spec:
  prune: true
  memory: 256M
  kernel: {path: /boot/vmlinuz, root: /dev/vda}
  nics: [{mac: "52:54:00:00:00:09", mode: user}]
"""
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(data: bytes) -> None:
    parsed = parse_file(PATH, data)
    node = parse_file("dir/nodes.yaml", NODE_A.encode())
    result = assemble([parsed, node])
    assert (result.desired is None) == bool(result.problems)
    for problem in result.problems:
        text = str(problem)
        assert "\n" not in text and "\r" not in text, text
        assert text.startswith((f"{PATH}:", "dir/nodes.yaml:")), text
        assert problem.message


YAML_ALPHABET = st.sampled_from(
    [*"abc:-[]{}&*!|>'\"#?,.0123456789 \n\t", "---\n", "  ", "!!python/object ", "\x00", "é", "\ufeff"]
)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@SETTINGS
@given(st.lists(YAML_ALPHABET, max_size=120).map("".join))
def test_random_yamlish_text(text: str) -> None:
    _check(text.encode("utf-8"))


VALID = [
    yaml.safe_load(
        instance(
            extra="  disks: [{path: /srv/a.img}]\n  vnc: {display: 1}\n  migration: {maxDowntime: 300ms}\n"
        )
    ),
    yaml.safe_load(NODE_A.replace("node-a", "node-b") + "  memory: 2G\n"),
    yaml.safe_load(DEFAULTS),
]

LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["512M", "2G", "30s", "300ms", "52:54:00:00:00:01", "/abs/path", "node-a", "user", "bridge"]
    ),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            out += _paths(sub, (*prefix, i))
    return out


@SETTINGS
@given(st.data())
def test_mutated_valid_manifests(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, len(VALID) - 1))
    doc = yaml.safe_load(yaml.safe_dump(VALID[which]))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if action == "replace":
            parent[path[-1]] = data.draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][data.draw(st.text(max_size=10))] = data.draw(VALUES)
    docs = [doc if i == which else VALID[i] for i in range(len(VALID))]
    _check(yaml.safe_dump_all(docs, allow_unicode=True).encode("utf-8"))


@SETTINGS
@given(st.lists(st.sampled_from(instance().splitlines(keepends=True)), max_size=20), st.booleans())
def test_shuffled_lines_of_a_valid_manifest(lines: list[str], twice: bool) -> None:
    text = "".join(lines)
    _check((text + "---\n" + text if twice else text).encode())
