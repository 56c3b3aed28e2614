"""Reading the VNC password file on the node: owner-only, one non-empty line, never in the error text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.errors import SecretFileError
from reconciler.secretfile import read_secret

FIELD = "vnc.passwordFile"


def _file(tmp_path: Path, data: bytes, mode: int = 0o600) -> str:
    path = tmp_path / "pass"
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("data", "mode", "secret"),
    [(b"s3cret\n", 0o600, "s3cret"), (b"s3cret", 0o400, "s3cret"), (b"a b\n", 0o600, "a b")],
    ids=["newline", "no_newline", "space"],
)
def test_read(tmp_path: Path, data: bytes, mode: int, secret: str) -> None:
    assert read_secret(_file(tmp_path, data, mode), FIELD) == secret


@pytest.mark.parametrize(
    ("data", "mode", "detail"),
    [
        (b"s3cret\n", 0o644, "mode 0644 lets others read it; use chmod 600"),
        (b"s3cret\n", 0o640, "mode 0640 lets others read it; use chmod 600"),
        (b"", 0o600, "is empty"),
        (b"\n", 0o600, "is empty"),
        (b"s3cret\nmore\n", 0o600, "must hold one line of printable text"),
        (b"x" * 4097, 0o600, "is longer than 4096 bytes"),
    ],
    ids=["0644", "0640", "empty", "newline_only", "two_lines", "too_long"],
)
def test_refused(tmp_path: Path, data: bytes, mode: int, detail: str) -> None:
    path = _file(tmp_path, data, mode)
    with pytest.raises(SecretFileError) as info:
        read_secret(path, FIELD)
    assert str(info.value) == f"vnc.passwordFile {path}: {detail}"
    assert "s3cret" not in str(info.value)


def test_missing_and_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=r": No such file or directory$"):
        read_secret(str(tmp_path / "nope"), FIELD)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretFileError, match=r": is not a regular file$"):
        read_secret(str(fifo), FIELD)
