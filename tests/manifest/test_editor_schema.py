"""The editor set-ups docs/manifests.md documents, checked with the real yaml-language-server (skipped when
it is not installed, see tests/manifest/yamlls.py): the modeline as written, one per document (the
server reads it from each document's own header), and the workspace `yaml.schemas` glob of
.vscode/settings.json (every document of every file, no modeline needed). Each set-up must report an
error in every document of the example manifests, and nothing on the examples as they are."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .yamlls import YamlLanguageServer, server_path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
pytestmark = [pytest.mark.skipif(server_path() is None, reason="yaml-language-server is not installed "
                                 "(npm install yaml-language-server; set YAML_LANGUAGE_SERVER)"),
              pytest.mark.timeout(120)]


def documented_modeline() -> str:
    docs = (ROOT / "docs" / "manifests.md").read_text()
    block = re.search(r"```yaml\n(# yaml-language-server: [^\n]*)\n```", docs)
    assert block is not None, "docs/manifests.md shows no modeline"
    return block.group(1)


def workspace(tmp_path: Path) -> Path:
    """A manifest repository laid out like this one: schemas/ next to manifests/."""
    (tmp_path / "schemas").mkdir()
    shutil.copy(ROOT / "schemas" / "manifest.schema.json", tmp_path / "schemas")
    (tmp_path / "manifests").mkdir()
    return tmp_path


def broken(text: str) -> tuple[str, list[int]]:
    """`text` with an unknown field added to every document's spec; the lines (0-based) of those fields."""
    out, lines = [], []
    for line in text.splitlines():
        out.append(line)
        if line == "spec:":
            lines.append(len(out))
            out.append("  bogusField: 1")
    return "\n".join(out) + "\n", lines


def error_lines(diagnostics: list[dict[str, Any]]) -> list[int]:
    return sorted(d["range"]["start"]["line"] for d in diagnostics if d.get("severity", 1) == 1)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[YamlLanguageServer, Path]]:
    root = workspace(tmp_path)
    server = YamlLanguageServer(root, {})
    yield server, root
    server.close()


def test_the_documented_modeline_checks_every_document_of_the_examples(
        plain: tuple[YamlLanguageServer, Path]) -> None:
    server, root = plain
    modeline = documented_modeline()
    for example in EXAMPLES:
        text = example.read_text()
        assert text.count(modeline) == text.count("\n---\n") + 1, f"{example.name}: a modeline per document"
        path = root / "manifests" / example.name
        path.write_text(text)
        assert error_lines(server.check(path)) == [], example.name
        path = path.with_name(f"broken-{example.name}")
        path.write_text(broken(text)[0])
        assert error_lines(server.check(path)) == broken(text)[1], example.name


def test_one_modeline_at_the_top_covers_only_the_first_document(
        plain: tuple[YamlLanguageServer, Path]) -> None:
    """Why docs/manifests.md asks for one per document."""
    server, root = plain
    text = (ROOT / "manifests" / "nodes.yaml").read_text()
    first, rest = text.split("\n---\n", 1)
    path = root / "manifests" / "nodes.yaml"
    path.write_text(broken(first + "\n---\n" + rest.replace(documented_modeline() + "\n", ""))[0])
    assert len(broken(text)[1]) == 2
    assert error_lines(server.check(path)) == broken(text)[1][:1]


def test_the_workspace_glob_checks_files_without_modelines(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    settings = json.loads((ROOT / ".vscode" / "settings.json").read_text())
    server = YamlLanguageServer(root, {"schemas": settings["yaml.schemas"]})
    try:
        for example in EXAMPLES:
            text = "".join(line for line in example.read_text().splitlines(keepends=True)
                           if not line.startswith("# yaml-language-server:"))
            path = root / "manifests" / "sub" / example.name
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            assert error_lines(server.check(path)) == [], example.name
            path = path.with_name(f"broken-{example.name}")
            path.write_text(broken(text)[0])
            assert error_lines(server.check(path)) == broken(text)[1], example.name
    finally:
        server.close()
