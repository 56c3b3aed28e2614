"""classcode: dataclass methods compiled once, then taken from the cache, the same as the builtin's."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from reconciler import classcode
from reconciler.model import Disk
from tests.unit.helpers import fresh_probe

# A fresh interpreter imports the model (and the planner's actions), then says whether any dataclass
# method had to be compiled, and saves the cache as the CLI does on its way out.
PROBE = """
import json, sys
from reconciler import classcode
import reconciler.model, reconciler.planner.actions
print(json.dumps({"compiled": classcode.TABLE.added, "cached": len(classcode.TABLE.entries)}))
classcode.save()
"""


def _probe(cache_home: Path) -> dict[str, object]:
    return fresh_probe(PROBE, cache_home)


def test_installed_in_dataclasses() -> None:
    assert dataclasses.exec is classcode.cached_exec  # type: ignore[attr-defined]


def test_generated_code_is_compiled_without_our_compiler_flags() -> None:
    """Our modules use `from __future__ import annotations`; the builtin exec compiles dataclasses' text
    with dataclasses' flags, so an annotation in the generated code is an object, not a string."""
    assert Disk.__init__.__annotations__["return"] is None


def test_a_second_run_compiles_nothing(tmp_path: Path) -> None:
    first = _probe(tmp_path)
    assert first["compiled"] is True
    assert len(list((tmp_path / "reconciler").glob("dataclass-code-*.marshal"))) == 1
    second = _probe(tmp_path)
    assert second == {"compiled": False, "cached": first["cached"]}


@pytest.mark.parametrize("content", [b"", b"garbage", b"3.0.0 (other python)\0dataclass code v1\n\x00",
                                     b"{sys.version}\0dataclass code v1\n" + b"\xff\xfe"])
def test_a_cache_that_does_not_load_is_ignored(tmp_path: Path, content: bytes) -> None:
    _probe(tmp_path)
    (target,) = (tmp_path / "reconciler").glob("dataclass-code-*.marshal")
    target.write_bytes(content.replace(b"{sys.version}", sys.version.encode()))
    again = _probe(tmp_path)
    assert again["compiled"] is True  # compiled as without a cache, then saved again
    assert _probe(tmp_path)["compiled"] is False


def test_a_changed_text_is_a_miss() -> None:
    before = dict(classcode.TABLE.entries)
    made = dataclasses.make_dataclass("Fresh", [("a", int), ("b_never_seen_before", str)])
    assert made(1, "x").b_never_seen_before == "x"
    assert set(classcode.TABLE.entries) - set(before)  # a new text, compiled and kept
