"""The JSON Schema itself: valid 2020-12, documented everywhere, strict everywhere, found when installed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.manifest import schema

ROOT = Path(__file__).resolve().parents[2]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema.schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field (property, list item, map value) of the schema, with $refs resolved."""
    node = _resolve(node)
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", _resolve(sub)
        yield from _fields(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield f"{path}[]", _resolve(node["items"])
        yield from _fields(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield f"{path}.*", node["additionalProperties"]
    for branch in node.get("allOf", []):
        yield from _fields(branch.get("then", {}), path)
    for name, sub in node.get("$defs", {}).items():
        yield from _fields(sub, f"$defs.{name}")


def test_schema_is_valid_2020_12_with_an_id() -> None:
    doc = schema.schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"]


def test_every_field_has_description_and_examples() -> None:
    fields = list(_fields(schema.schema(), ""))
    assert len(fields) > 60
    missing = [path for path, sub in fields if not sub.get("description") or not sub.get("examples")]
    assert missing == []


def test_every_object_forbids_unknown_fields() -> None:
    def objects(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if "properties" in node:
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(schema.schema()))
    lax = [sorted(o["properties"]) for o in found if o.get("additionalProperties") is not False]
    # the only objects with properties and no additionalProperties: false are the kind -> spec selectors
    assert lax and all(keys in (["kind"], ["spec"]) for keys in lax)


def test_every_example_is_valid_for_its_field() -> None:
    validator_cls = jsonschema.Draft202012Validator
    for path, sub in _fields(schema.schema(), ""):
        for example in sub["examples"]:
            subschema = {**sub, "$defs": schema.schema()["$defs"]}
            assert validator_cls(subschema).is_valid(example), (path, example)


def test_defaults_accepts_every_instance_field_plus_prune() -> None:
    defs = schema.schema()["$defs"]
    assert set(defs["defaultsSpec"]["properties"]) == set(defs["instanceSpec"]["properties"]) | {"prune"}


def test_schema_found_in_checkout_and_in_wheel_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert schema.schema_path() == str(ROOT / "schemas" / schema.SCHEMA_FILE)
    # an installed wheel has reconciler/schemas/ (force-included): that location wins
    fake_pkg = tmp_path / "reconciler"
    (fake_pkg / "manifest").mkdir(parents=True)
    (fake_pkg / "schemas").mkdir()
    (fake_pkg / "schemas" / schema.SCHEMA_FILE).write_text("{}")
    monkeypatch.setattr(schema, "__file__", str(fake_pkg / "manifest" / "schema.py"))
    assert schema.schema_path() == str(fake_pkg / "schemas" / schema.SCHEMA_FILE)


def test_pyproject_ships_the_schema_in_the_wheel() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"schemas" = "reconciler/schemas"' in text


@pytest.mark.parametrize("example", sorted((ROOT / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_carry_the_editor_modeline_and_validate(example: Path) -> None:
    text = example.read_text()
    for part in text.split("\n---\n"):  # the language server reads a modeline per document
        assert part.startswith("# yaml-language-server: $schema=../schemas/manifest.schema.json\n"), part
    for doc in yaml.safe_load_all(text):
        jsonschema.validate(doc, schema.schema(), cls=jsonschema.Draft202012Validator)


def test_fast_check_agrees_with_jsonschema() -> None:
    """The fast pre-check decides valid/invalid; jsonschema explains. They must agree."""
    docs: list[Any] = [json.loads(json.dumps(d)) for d in schema.schema()["examples"]]
    docs += [
        {
            "apiVersion": "reconciler/v1",
            "kind": "Instance",
            "metadata": {"name": "a"},
            "spec": {"vcpus": True},
        },
        {
            "apiVersion": "reconciler/v1",
            "kind": "Instance",
            "metadata": {"name": "a"},
            "spec": {"memory": 1.5},
        },
        {
            "apiVersion": "reconciler/v1",
            "kind": "Node",
            "metadata": {"name": "a"},
            "spec": {"stateDir": "/s", "x": 1},
        },
        {
            "apiVersion": "reconciler/v1",
            "kind": "Defaults",
            "metadata": {"name": "a"},
            "spec": {"prune": True},
        },
        {"apiVersion": "reconciler/v1", "kind": "Node", "metadata": {"name": "a"}, "spec": {}},
    ]
    full = jsonschema.Draft202012Validator(schema.schema())
    assert (
        [schema._fast_check()(d) for d in docs]
        == [full.is_valid(d) for d in docs]
        == [True, False, False, False, True, False]
    )


def test_docs_show_the_workspace_schema_setting_of_vscode_settings() -> None:
    """docs/manifests.md's `yaml.schemas` example is this repository's .vscode/settings.json (which
    test_editor_schema.py checks with the real language server)."""
    block = re.search(r"```json\n(.*?)\n```", (ROOT / "docs" / "manifests.md").read_text(), re.S)
    assert block is not None
    assert json.loads(block.group(1)) == json.loads((ROOT / ".vscode" / "settings.json").read_text())


def test_compiled_check_cache_is_keyed_by_the_schema_text_not_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every checkout (each CI clone) once left its own 70 KB entry; one schema text is one entry now.
    version = schema._fastjsonschema_version()
    if version is None:
        pytest.skip("fastjsonschema is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    text = Path(schema.schema_path()).read_text()
    for checkout in ("a", "b"):
        copy = tmp_path / checkout / "manifest.schema.json"
        copy.parent.mkdir()
        copy.write_text(text)
        monkeypatch.setattr(schema, "schema_path", lambda copy=copy: str(copy))
        schema._compiled_fast_validator(version)
    entries = sorted(p.name for p in (tmp_path / "cache" / "reconciler").iterdir())
    assert len(entries) == 1 and entries[0].startswith("schema-check-")
    changed = tmp_path / "c" / "manifest.schema.json"
    changed.parent.mkdir()
    changed.write_text(text.replace('"description"', '"description" ', 1))  # same schema, other text
    monkeypatch.setattr(schema, "schema_path", lambda: str(changed))
    schema._compiled_fast_validator(version)
    assert len(list((tmp_path / "cache" / "reconciler").iterdir())) == 2
