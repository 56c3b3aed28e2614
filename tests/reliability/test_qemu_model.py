"""The QEMU option model itself, pinned on the behaviours of util/qemu-option.c and util/keyval.c."""

from __future__ import annotations

import pytest

from .qemu_model import ModelError, parse_keyval, parse_qemuopts

OPTS_CASES = [
    ("virtio-blk-pci,id=d0", "driver", [("driver", "virtio-blk-pci"), ("id", "d0")]),
    ("a,,b,c=d", "driver", [("driver", "a,b"), ("c", "d")]),
    ("path=/x,,y,server=on", None, [("path", "/x,y"), ("server", "on")]),
    ("path=/x,,", None, [("path", "/x,")]),
    ("path=,,,,", None, [("path", ",,")]),
    ("path=a=b", None, [("path", "a=b")]),
    ("path=a b 'c' \"d\" \\e", None, [("path", "a b 'c' \"d\" \\e")]),
    ("path=", None, [("path", "")]),
    ("a=1,", None, [("a", "1")]),
    ("a=1,wait,nodelay", None, [("a", "1"), ("wait", "on"), ("delay", "off")]),
    ("socket,id=x,path=/a,b=c", "backend", [("backend", "socket"), ("id", "x"), ("path", "/a"), ("b", "c")]),
    ("guest=web1", "guest", [("guest", "web1")]),
]


@pytest.mark.parametrize(("text", "implied", "pairs"), OPTS_CASES)
def test_qemuopts(text: str, implied: str | None, pairs: list[tuple[str, str]]) -> None:
    assert parse_qemuopts(text, implied) == pairs


KEYVAL_CASES = [
    ("driver=file,filename=/a,,b", None, [("driver", "file"), ("filename", "/a,b")]),
    ("file,filename=/x", "driver", [("driver", "file"), ("filename", "/x")]),
    ("driver=file,cache.direct=on", None, [("driver", "file"), ("cache.direct", "on")]),
    ("filename=a=b,,=c", None, [("filename", "a=b,=c")]),
    ("pc,accel=tcg,acpi=off", "type", [("type", "pc"), ("accel", "tcg"), ("acpi", "off")]),
    ("filename=x,", None, [("filename", "x")]),
    ("driver=x,,,y=1", None, [("driver", "x,"), ("y", "1")]),
]


@pytest.mark.parametrize(("text", "implied", "pairs"), KEYVAL_CASES)
def test_keyval(text: str, implied: str | None, pairs: list[tuple[str, str]]) -> None:
    assert parse_keyval(text, implied) == pairs


@pytest.mark.parametrize("text", ["a,,b", "driver=x,flag", "driver=x,bad key=1", "=x"])
def test_keyval_rejects(text: str) -> None:
    with pytest.raises(ModelError):
        parse_keyval(text, "driver")
