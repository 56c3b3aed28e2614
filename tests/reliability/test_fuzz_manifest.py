"""Fuzzing the manifest pipeline (parse_file + assemble): bad input gives one-line problems, never raises.

Goes beyond the loader's own tests: random bytes and YAML-token soup, a mutation of every field of
generated valid manifests (delete, wrong type, extreme values, unicode, deep nesting), text-level edits
(duplicate lines -> duplicate keys, inserted anchors/aliases/tags, junk bytes), truncation at every
offset of a valid file, alias bombs, hostile tags, and nesting far past the recursion limit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .contract import load_bytes
from .manifests import HOSTILE_VALUES, delete_at, dump, manifest_sets, paths_in, set_at
from .profiles import fuzz

REPO = Path(__file__).resolve().parents[2]

YAML_TOKENS = [
    ": ", "- ", "? ", "&a ", "*a", "&b ", "*b", "!!python/object/apply:os.system ", "!!binary ", "!x ",
    "!!str ", "!!int ", "!!map ", "!!set ", "!!omap ", "!!timestamp ", "<<: *a", "{", "}", "[", "]", ", ",
    "\n", "\n  ", "\n    ", "\t", "'", '"', "\\", "|", ">", "#", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n",
    "---\n", "...\n", "apiVersion: reconciler/v1\n", "kind: Instance\n", "kind: Node\n", "kind: Defaults\n",
    "metadata:\n  name: a\n", "spec:\n", "memory: 1G\n", "stateDir: /x\n", "node: a\n", "name", "0x1F",
    "0o17", "1e999", ".nan", "-.inf", "~", "null", "True", "NO", "52:54:00:12:34:56", "2024-01-01",
    "\ufeff", "\u2028", "\x85", "\x00", "\x1b", "é", "🙂", "\ud7ff",
]


def rich_manifest() -> bytes:
    """One valid file using every field (the truncation sweep cuts it at every offset)."""
    return (REPO / "tests/reliability/data/rich.yaml").read_bytes()


# --- valid input -----------------------------------------------------------------------------------


@fuzz(100)
@given(manifest_sets())
def test_generated_manifests_load_cleanly(docs: list[dict[str, object]]) -> None:
    result = load_bytes({"m.yaml": dump(docs)})
    assert result.problems == ()
    assert result.desired is not None
    assert len(result.desired.instances) == sum(d["kind"] == "Instance" for d in docs)


def test_rich_manifest_is_valid() -> None:
    result = load_bytes({"rich.yaml": rich_manifest()})
    assert result.problems == ()


# --- structured mutations ------------------------------------------------------------------------


@fuzz(400)
@given(manifest_sets(), st.data())
def test_mutating_any_field_never_raises(docs: list[dict[str, object]], data: st.DataObject) -> None:
    docs = copy.deepcopy(docs)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        i = data.draw(st.integers(0, len(docs) - 1), label="document")
        paths = list(paths_in(docs[i]))
        path = data.draw(st.sampled_from(paths), label="path")
        how = data.draw(st.sampled_from(["delete", "replace", "unknown-key", "wrap"]), label="how")
        if how == "delete":
            delete_at(docs[i], path)
        elif how == "replace":
            set_at(docs[i], path, data.draw(HOSTILE_VALUES, label="value"))
        elif how == "unknown-key":
            set_at(docs[i], path, {"bogus": 1})
        else:
            from .manifests import get_at
            set_at(docs[i], path, [get_at(docs[i], path)])
    if data.draw(st.booleans(), label="duplicate a document"):
        docs.append(copy.deepcopy(docs[0]))
    load_bytes({"m.yaml": dump(docs)})


@fuzz(400)
@given(manifest_sets(), st.data())
def test_text_edits_never_raise(docs: list[dict[str, object]], data: st.DataObject) -> None:
    text = dump(docs).decode()
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        lines = text.splitlines(keepends=True)
        how = data.draw(st.sampled_from(["insert", "delete", "dup-line", "swap", "indent"]), label="how")
        at = data.draw(st.integers(0, len(text)), label="offset")
        if how == "insert":
            text = text[:at] + data.draw(st.sampled_from(YAML_TOKENS), label="token") + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 20), label="span"):]
        elif lines:
            k = data.draw(st.integers(0, len(lines) - 1), label="line")
            if how == "dup-line":
                lines.insert(k, lines[k])  # a repeated key, or a repeated list item
            elif how == "swap":
                j = data.draw(st.integers(0, len(lines) - 1), label="other line")
                lines[k], lines[j] = lines[j], lines[k]
            else:
                lines[k] = " " * data.draw(st.integers(1, 3), label="indent") + lines[k]
            text = "".join(lines)
    load_bytes({"m.yaml": text.encode("utf-8", "surrogatepass")})


@fuzz(300)
@given(manifest_sets(), st.data())
def test_byte_edits_never_raise(docs: list[dict[str, object]], data: st.DataObject) -> None:
    raw = bytearray(dump(docs))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(raw) - 1), label="offset")
        raw[at] = data.draw(st.integers(0, 255), label="byte")
    other = dump(data.draw(manifest_sets(), label="second file"))
    load_bytes({"a.yaml": bytes(raw), "b.yaml": other})


# --- random input ----------------------------------------------------------------------------------


@fuzz(300)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    load_bytes({"junk.yaml": data})


@fuzz(500)
@given(st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=4), max_size=60).map("".join))
def test_yaml_token_soup_never_raises(text: str) -> None:
    load_bytes({"soup.yaml": text.encode("utf-8", "surrogatepass")})


# --- sweeps and crafted hostile input --------------------------------------------------------------


def _sweep_files() -> list[tuple[str, bytes]]:
    files = [("rich.yaml", rich_manifest())]
    files += [(p.name, p.read_bytes()) for p in sorted((REPO / "manifests").glob("*.yaml"))]
    return files


@pytest.mark.parametrize(("name", "data"), _sweep_files(), ids=[n for n, _ in _sweep_files()])
def test_truncation_at_every_offset(name: str, data: bytes) -> None:
    nodes = (REPO / "manifests/nodes.yaml").read_bytes()
    for cut in range(len(data) + 1):
        load_bytes({name: data[:cut], "zz-nodes.yaml": nodes})


NEST = 100_000


@pytest.mark.parametrize("where", ["labels", "extra", "unknown", "defaults", "document"])
@pytest.mark.parametrize("form", ["flow-seq", "flow-map", "block-seq"])
@pytest.mark.parametrize("depth", [500, 2_000, NEST])
def test_deep_nesting(where: str, form: str, depth: int) -> None:
    if form == "flow-seq":
        value = "[" * depth + "]" * depth
    elif form == "flow-map":
        value = "{a: " * depth + "1" + "}" * depth
    else:
        depth = min(depth, 2_000)  # block form: indentation grows quadratically
        value = "\n" + "".join(" " * (i + 4) + "-\n" for i in range(depth))
    base = ("apiVersion: reconciler/v1\nkind: {kind}\nmetadata:\n  name: a\n{labels}"
            "spec:\n  memory: 1G\n{extra}")
    kind, labels, extra = "Instance", "", ""
    if where == "labels":
        labels = f"  labels:\n    k: {value}\n"
    elif where == "extra":
        extra = f"  qemuExtraArgs: {value}\n"
    elif where == "unknown":
        extra = f"  bogus: {value}\n"
    elif where == "defaults":
        kind, extra = "Defaults", f"  kernel: {value}\n"
    text = value if where == "document" else base.format(kind=kind, labels=labels, extra=extra)
    load_bytes({"deep.yaml": text.encode(), "b.yaml": _instance("b")})


def _instance(name: str, extra: str = "") -> bytes:
    return (f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
            f"spec:\n  memory: 1G\n{extra}").encode()


def _named(name: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\nspec: {{memory: 1G}}\n"


HOSTILE_DOCS = {
    "billion-laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)),
    "recursive-alias": "a: &a [*a]\n",
    "recursive-map": "&a {k: *a}\n",
    "alias-as-key": "x: &k name\n*k : 1\n",
    "merge-key": "base: &b {memory: 1G}\nspec:\n  <<: *b\n",
    "undefined-alias": "spec: *nope\n",
    "python-object": "!!python/object/apply:os.system ['true']\n",
    "python-name": "spec: !!python/name:os.system\n",
    "binary-tag": "spec: !!binary aGVsbG8=\n",
    "custom-tag": "spec: !custom {a: 1}\n",
    "verbatim-tag": "spec: !<tag:yaml.org,2002:int> abc\n",
    "int-tag-on-text": "spec: !!int abc\n",
    "float-tag-on-text": "spec: !!float x1\n",
    "bool-tag": "spec: !!bool maybe\n",
    "null-tag": "spec: !!null x\n",
    "set": "spec: !!set {a, b}\n",
    "omap": "spec: !!omap [a: 1]\n",
    "timestamp": "spec: !!timestamp 2024-01-01\n",
    "complex-key": "? [a, b]\n: 1\n",
    "map-key": "{a: 1}: 2\n",
    "null-key": "~: 1\n",
    "int-key": "1: 2\n",
    "dup-key": "kind: Instance\nkind: Node\n",
    "tab-indent": "spec:\n\tmemory: 1G\n",
    "bom-middle": "kind: Instance\n\ufeffspec: {}\n",
    "nel": "kind: Instance\x85spec: {}\n",
    "directive-twice": "%YAML 1.1\n%YAML 1.1\n---\na: 1\n",
    "yaml-1.3": "%YAML 1.3\n---\na: 1\n",
    "only-comments": "# nothing\n",
    "only-separators": "---\n---\n...\n",
    "long-number": "spec: {memory: " + "9" * 5000 + "}\n",
    "long-key": "k" * 100_000 + ": 1\n",
    "many-documents": "---\n{}\n" * 2000,
    "surrogate-escape": 'spec: "\\ud800"\n',
    "name-nul": _named('"a\\x00b"'),
    "name-newline": _named('"a\\n"'),
    "name-dotdot": _named('".."'),
    "name-slash": _named('"a/b"'),
    "name-slashes": _named('"../../etc"'),
    "name-long": _named("a" * 64),
    "name-upper": _named("Web1"),
    "name-unicode": _named("wéb"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_DOCS))
def test_hostile_documents(name: str) -> None:
    result = load_bytes({f"{name}.yaml": HOSTILE_DOCS[name].encode(), "ok.yaml": _instance("ok")})
    assert result.problems, "every hostile document is a problem"


@pytest.mark.parametrize("junk", [b"\xff\xfe", b"\x00", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf" * 2])
def test_binary_junk_is_one_problem_naming_the_file(junk: bytes) -> None:
    result = load_bytes({"j.yaml": _instance("j") + junk + b"\n"})
    assert len(result.problems) == 1
