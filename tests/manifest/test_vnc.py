"""VNC in manifests: passwordFile and tls become model values, bad paths are positioned problems, and a
display on every address without a password (or TLS) is a warning that `validate` prints but does not fail.
"""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import cli, manifest
from reconciler.errors import ExitCode
from reconciler.model import Vnc, VncTls
from tests.manifest.helpers import NODE_A, instance, problem_lines, write_tree


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vnc: str) -> manifest.LoadResult:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/web1.yaml": instance(extra=f"  vnc: {vnc}\n")})
    return manifest.load(["m"])


@pytest.mark.parametrize(
    ("vnc", "expected"),
    [
        ("{display: 1}", Vnc(display=1)),
        ("{display: 1, passwordFile: /etc/rc/web1.pass}", Vnc(display=1, password_file="/etc/rc/web1.pass")),
        ("{bind: '::', tls: {x509Dir: /etc/pki/vnc}}", Vnc(bind="::", tls=VncTls(x509_dir="/etc/pki/vnc"))),
    ],
    ids=["plain", "password", "tls"],
)
def test_vnc_fields_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vnc: str, expected: Vnc) -> None:
    result = _load(tmp_path, monkeypatch, vnc)
    assert result.desired is not None, result.problems
    assert result.desired.instances["web1"].vnc == expected


@pytest.mark.parametrize(
    ("vnc", "expected"),
    [
        ("{passwordFile: web1.pass}", ["m/web1.yaml:11:9: instance web1: spec.vnc.passwordFile: passwordFile 'web1.pass' must be an absolute path"]),
        ("{tls: {x509Dir: pki}}", ["m/web1.yaml:11:15: instance web1: spec.vnc.tls.x509Dir: x509Dir 'pki' must be an absolute path"]),
        ("{tls: {}}", ["m/web1.yaml:11:9: instance web1: spec.vnc.tls.x509Dir: required field is missing"]),
        ("{passwordFile: ''}", ["m/web1.yaml:11:9: instance web1: spec.vnc.passwordFile: must not be empty"]),
    ],
    ids=["relative_password_file", "relative_x509_dir", "tls_without_dir", "empty_password_file"],
)
def test_vnc_field_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vnc: str, expected: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/web1.yaml": instance(extra=f"  vnc: {vnc}\n")})
    assert problem_lines(["m"]) == expected


@pytest.mark.parametrize(
    ("vnc", "warnings"),
    [
        ("{bind: 0.0.0.0, display: 1}", ["m/web1.yaml:11:9: warning: instance web1: spec.vnc.bind: VNC display 1 listens on every address (0.0.0.0) without a passwordFile or tls: anyone who reaches port 5901 gets the console"]),
        ("{bind: '::'}", ["m/web1.yaml:11:9: warning: instance web1: spec.vnc.bind: VNC display 0 listens on every address (::) without a passwordFile or tls: anyone who reaches port 5900 gets the console"]),
        ("{bind: 0.0.0.0, passwordFile: /etc/rc/web1.pass}", []),
        ("{bind: 0.0.0.0, tls: {x509Dir: /etc/pki/vnc}}", []),
        ("{bind: 127.0.0.1}", []),
        ("{bind: 192.0.2.7}", []),
    ],
    ids=["ipv4_any", "ipv6_any", "password", "tls", "loopback", "one_address"],
)
def test_all_addresses_without_password_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vnc: str, warnings: list[str]
) -> None:
    result = _load(tmp_path, monkeypatch, vnc)
    assert result.desired is not None and result.problems == ()
    assert [str(w) for w in result.warnings] == warnings


def test_validate_prints_warnings_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/web1.yaml": instance(extra="  vnc: {bind: 0.0.0.0}\n")})
    assert cli.main(["validate", "m"]) == ExitCode.OK
    captured = capsys.readouterr()
    assert captured.out == (
        "m/web1.yaml:11:9: warning: instance web1: spec.vnc.bind: VNC display 0 listens on every address (0.0.0.0) without a passwordFile or tls: anyone who reaches port 5900 gets the console\n"
        "valid: 1 instances, 1 nodes in 2 files, 1 warning\n"
    )
    assert captured.err == ""
    assert cli.main(["validate", "--json", "m"]) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert (report["valid"], report["problems"]) == (True, [])
    assert [(w["severity"], w["field"], w["line"]) for w in report["warnings"]] == [("warning", "spec.vnc.bind", 11)]


def test_warnings_come_with_errors_and_do_not_count_as_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    web1 = instance(extra="  vnc: {bind: 0.0.0.0}\n").replace("memory: 128M", "memory: 12X")
    write_tree(tmp_path, {"m/nodes.yaml": NODE_A, "m/web1.yaml": web1})
    assert cli.main(["validate", "m"]) == ExitCode.ERROR
    captured = capsys.readouterr()
    assert captured.out == (
        "m/web1.yaml:7:3: instance web1: spec.memory: '12X' is not a size like 512M or 2G\n"
        "m/web1.yaml:11:9: warning: instance web1: spec.vnc.bind: VNC display 0 listens on every address (0.0.0.0) without a passwordFile or tls: anyone who reaches port 5900 gets the console\n"
    )
    assert captured.err == "1 problem found, 1 warning\n"
