"""`reconciler validate` and `reconciler schema`, run in-process through the real CLI entry point."""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.errors import ExitCode
from tests.manifest.helpers import NODE_A, instance, write_tree

ROOT = Path(__file__).resolve().parents[2]


def test_examples_are_valid(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["validate"]) == ExitCode.OK  # default: ./manifests
    assert capsys.readouterr().out == "valid: 2 instances, 2 nodes in 4 files\n"


def test_invalid_prints_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = instance().replace("memory: 128M", "memory: 12X") + "  vnc: {bind: nowhere}\n"
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/web1.yaml": bad, "m/junk.yml": "a: [\n"})
    assert cli.main(["validate", "m"]) == ExitCode.ERROR
    captured = capsys.readouterr()
    assert captured.out == (
        "m/junk.yml:2:1: invalid YAML: while parsing a flow node did not find expected node content\n"
        "m/web1.yaml:7:3: instance web1: spec.memory: '12X' is not a size like 512M or 2G\n"
        "m/web1.yaml:11:9: instance web1: spec.vnc.bind: 'nowhere' is not a valid IP address\n"
    )
    assert captured.err == "3 problems found\n"


def test_json_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/web1.yaml": instance(node="node-z")})
    assert cli.main(["validate", "--json", "m"]) == ExitCode.ERROR
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "valid": False,
        "files": ["m/web1.yaml"],
        "instances": 0,
        "nodes": 0,
        "problems": [
            {
                "path": "m/web1.yaml",
                "line": 6,
                "column": 3,
                "kind": "Instance",
                "name": "web1",
                "field": "spec.node",
                "message": "node 'node-z' is not declared (nodes: none declared)",
                "severity": "error",
                "text": "m/web1.yaml:6:3: instance web1: spec.node: node 'node-z' is not declared (nodes: none declared)",
            }
        ],
        "warnings": [],
    }


def test_json_output_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "--json", str(ROOT / "manifests")]) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert (report["valid"], report["instances"], report["nodes"], report["problems"]) == (True, 2, 2, [])


def test_several_paths_and_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"a/nodes.yaml": NODE_A, "b/web1.yaml": instance()})
    assert cli.main(["validate", "a", "b/web1.yaml"]) == ExitCode.OK
    assert cli.main(["validate", "a", "missing"]) == ExitCode.ERROR
    assert capsys.readouterr().out.splitlines()[-1] == "missing: no such file or directory"
    assert cli.main(["validate", "--json", "a", "missing"]) == ExitCode.ERROR
    report = json.loads(capsys.readouterr().out)
    assert (report["files"], [p["text"] for p in report["problems"]]) == (
        ["a/nodes.yaml"],
        ["missing: no such file or directory"],
    )


def test_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert cli.main(["validate", "m"]) == ExitCode.ERROR
    assert capsys.readouterr().out == "m: no .yaml or .yml files found\n"


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert printed == (ROOT / "schemas" / "manifest.schema.json").read_text()
    assert json.loads(printed)["$id"]


def test_schema_command_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", "--path"]) == ExitCode.OK
    assert capsys.readouterr().out == f"{ROOT / 'schemas' / 'manifest.schema.json'}\n"
