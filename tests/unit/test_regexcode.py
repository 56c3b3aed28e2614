"""regexcode: a regular expression's compiled form taken from the cache is the stdlib's, argument for
argument, and matches the same; the cache fills once and a broken one is ignored."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler import regexcode
from tests.unit.helpers import fresh_probe

pytestmark = pytest.mark.skipif(sys.version_info[:2] not in ((3, 11), (3, 12)),
                                reason="installed on Python 3.11 and 3.12 only")

PATTERNS: list[tuple[str | bytes, int]] = [
    (r"([0-9]+(?:\.[0-9]+)?)(?:([KMGTkmgt])(?:i?B)?|(B))?", 0),
    (r"(?P<key>[A-Za-z_][\w.-]*): +(?!#)(?P<value>\S.*)", 0),
    (r"^---$\n?", re.MULTILINE),
    (r"(?i)caf\u00e9|STRASSE", 0),
    (r"straße", re.IGNORECASE),
    (r"(?<=a)b(?=c)|(?<!x)y", 0),
    (r"(a)(b)?(?P<n>c)\3(?P=n)", 0),
    (r"[^\x20-\x7e\n]", 0),
    (r"  a  # a comment\n  b+ ", re.VERBOSE),
    (r"\w+", re.ASCII),
    (br"[\x00-\x1f]+\xff", 0),
    (rb"(?P<x>ab)+", re.DOTALL),
    ("", 0),
]
SAMPLES = ["512MiB", "1.5G", "key: value", "---\nx", "CAFÉ", "STRASSE", "abc", "xy", "abcbcc", "é\t",
           "aab", "ünïcode_w", "straße"]


def _stdlib_args(pattern: str | bytes, flags: int) -> tuple[Any, ...]:
    """What the untouched stdlib hands `_sre.compile` for this pattern."""
    from re import _compiler  # type: ignore[attr-defined]

    seen: list[tuple[Any, ...]] = []
    real = _compiler._sre

    class Recorder:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def compile(*args: Any) -> Any:
            seen.append(args)
            return real.compile(*args)

    _compiler._sre = Recorder()
    try:
        assert regexcode._original is not None
        regexcode._original(pattern, flags)
    finally:
        _compiler._sre = real
    (args,) = seen
    return args


@pytest.mark.parametrize(("pattern", "flags"), PATTERNS)
def test_the_cached_form_is_the_stdlibs(pattern: str | bytes, flags: int) -> None:
    stdlib = _stdlib_args(pattern, flags)
    flags_out, code, groups, groupindex, indexgroup = regexcode.compile_args(pattern, flags)
    assert (stdlib[0], flags_out, list(stdlib[2]), stdlib[3], dict(stdlib[4]), stdlib[5]) == (
        pattern, flags_out, code, groups, groupindex, indexgroup)
    assert stdlib[1] == flags_out


@pytest.mark.parametrize(("pattern", "flags"), PATTERNS)
def test_a_cached_pattern_matches_as_the_stdlibs(pattern: str | bytes, flags: int) -> None:
    assert regexcode._original is not None
    fresh, cached = regexcode._original(pattern, flags), regexcode.cached_compile(pattern, flags)
    assert (cached.pattern, cached.flags, cached.groups, cached.groupindex) == (
        fresh.pattern, fresh.flags, fresh.groups, fresh.groupindex)
    for sample in SAMPLES:
        text: str | bytes = sample.encode("utf-8") if isinstance(pattern, bytes) else sample
        assert [m.groups() for m in cached.finditer(text)] == [m.groups() for m in fresh.finditer(text)]  # type: ignore[arg-type]


def test_installed_in_re() -> None:
    from re import _compiler  # type: ignore[attr-defined]

    assert _compiler.compile is regexcode.cached_compile
    assert re.compile(r"x(?P<never_seen_before_here>y)z").groupindex == {"never_seen_before_here": 1}


# A fresh interpreter imports the manifest reader and the CLI's parser (which compile at import), says
# whether a pattern had to be compiled, and saves the cache as the CLI does on its way out.
PROBE = """
import json
from reconciler import regexcode
import reconciler.manifest, reconciler.cli
print(json.dumps({"added": regexcode.TABLE.added, "cached": len(regexcode.TABLE.entries)}))
regexcode.save()
"""


def _probe(cache_home: Path) -> dict[str, object]:
    return fresh_probe(PROBE, cache_home)


def test_a_second_run_compiles_nothing(tmp_path: Path) -> None:
    first = _probe(tmp_path)
    assert first["added"] is True
    assert len(list((tmp_path / "reconciler").glob("regex-code-*.marshal"))) == 1
    assert _probe(tmp_path) == {"added": False, "cached": first["cached"]}


@pytest.mark.parametrize("content", [b"", b"garbage", b"3.0.0 (other python)\0x\0regex code v1\n\x00",
                                     b"{key}" + b"\xff\xfe", b"{key}" + b"\xe9\x00\x00\x00"])
def test_a_cache_that_does_not_load_is_ignored(tmp_path: Path, content: bytes) -> None:
    _probe(tmp_path)
    (target,) = (tmp_path / "reconciler").glob("regex-code-*.marshal")
    target.write_bytes(content.replace(b"{key}", regexcode._CACHE_KEY))
    again = _probe(tmp_path)
    assert again["added"] is True  # compiled as without a cache, then saved again
    assert _probe(tmp_path)["added"] is False
