"""Unit: the command line takes options and positionals in any order, and a bad option value is named by
the option (`--parallel: 'x' is not a positive integer`), never by a Python function."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from reconciler import cli

# A value the parser wrongly accepts would run the command: never where it could find ./manifests.
pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

MANIFESTS = """\
apiVersion: reconciler/v1
kind: Node
metadata: {name: n1}
spec: {stateDir: STATE, accelerator: tcg}
---
apiVersion: reconciler/v1
kind: Node
metadata: {name: n2}
spec: {stateDir: STATE2, accelerator: tcg, address: 127.0.0.2}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: vm1}
spec: {node: n1, memory: 64M}
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = cli.main(list(argv))
    except SystemExit as done:
        rc = int(done.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    text = MANIFESTS.replace("STATE2", str(tmp_path / "s2")).replace("STATE", str(tmp_path / "s1"))
    (d / "all.yaml").write_text(text)
    return d


@pytest.mark.parametrize("order", [
    ["showcmd", "vm1", "--node", "n2", "{m}"],
    ["showcmd", "--node", "n2", "vm1", "{m}"],
    ["showcmd", "vm1", "{m}", "--node", "n2"],
    ["showcmd", "--oneline", "vm1", "--node", "n2", "{m}"],
])
def test_showcmd_takes_options_anywhere(order: list[str], mdir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, *(a.replace("{m}", str(mdir)) for a in order))
    assert (rc, err) == (0, "")
    assert f"{mdir.parent / 's2'}/instances/vm1/qemu.pid" in out  # on n2, as --node says


def test_status_takes_options_anywhere(mdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "status", "vm1", "--json", str(mdir))
    assert (rc, err) == (0, "")
    assert '"name": "vm1"' in out


@pytest.mark.parametrize(("argv", "message"), [
    (["apply", "--parallel", "x"], "reconciler apply: error: --parallel: 'x' is not a positive integer"),
    (["apply", "--parallel", "0"], "reconciler apply: error: --parallel: '0' is not a positive integer"),
    (["watch", "--parallel", "1.5"], "reconciler watch: error: --parallel: '1.5' is not a positive integer"),
    (["apply", "--lock-timeout", "soon"],
     "reconciler apply: error: --lock-timeout: 'soon' is not a number of seconds (0 or more)"),
    (["watch", "--resync", "nan"],
     "reconciler watch: error: --resync: 'nan' is not a number of seconds (0 or more)"),
    (["apply", "--parallel"], "reconciler apply: error: --parallel: expected one argument"),
])
def test_bad_values_name_the_option(argv: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, *argv)
    assert rc == 64
    assert err.splitlines()[-1] == message


def _typed_options() -> list[tuple[str, str]]:
    found = []
    for name, (module, _) in cli.COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module).add_arguments(parser)
        found += [(name, a.option_strings[-1]) for a in parser._actions
                  if a.type is not None and a.option_strings]
    return found


@pytest.mark.parametrize(("command", "option"), _typed_options())
def test_no_option_is_worded_as_a_function(command: str, option: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, command, option, "x")
    assert rc == 64
    last = err.splitlines()[-1]
    assert last.startswith(f"reconciler {command}: error: {option}: 'x'"), last
    assert "invalid" not in last and "_" not in last.split(": ", 2)[2], last


def test_builtin_types_are_worded_too() -> None:
    assert cli.usage_message("argument --n: invalid int value: 'x'") == "--n: 'x' is not a valid value"
    assert cli.usage_message("argument --n: expected one argument") == "--n: expected one argument"


@pytest.mark.parametrize("columns", ["57", "", "garbage", "-3"])
def test_the_help_width_is_what_argparse_would_take(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """cli's formatter asks no shutil for the width; it must still be the one argparse's own takes."""
    monkeypatch.setenv("COLUMNS", columns)
    ours = cli._Formatter("reconciler")
    stock = argparse.HelpFormatter("reconciler")
    assert (ours._width, ours._max_help_position) == (stock._width, stock._max_help_position)
