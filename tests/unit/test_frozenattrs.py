"""frozenattrs: frozen dataclasses behave exactly as with the standard library's generated methods."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from reconciler import frozenattrs
from reconciler.model import Disk


@contextmanager
def factory(which: Callable[..., Any] | None) -> Iterator[None]:
    saved = dataclasses._frozen_get_del_attr  # type: ignore[attr-defined]
    dataclasses._frozen_get_del_attr = which  # type: ignore[attr-defined]
    try:
        yield
    finally:
        dataclasses._frozen_get_del_attr = saved  # type: ignore[attr-defined]


def _classes() -> dict[str, Any]:
    """A frozen class (with slots and without), a plain subclass of it and a dataclass subclass."""
    base = dataclasses.make_dataclass("Base", [("a", int), ("b", str, dataclasses.field(default="x"))],
                                      frozen=True)
    slotted = dataclasses.make_dataclass("Slotted", [("a", int)], frozen=True, slots=True)
    empty = dataclasses.make_dataclass("Empty", [], frozen=True)
    plain_sub = type("PlainSub", (base,), {})
    data_sub = dataclasses.make_dataclass("DataSub", [("c", int, dataclasses.field(default=0))],
                                          bases=(base,), frozen=True)
    return {"base": base(1), "slotted": slotted(1), "empty": empty(), "plain_sub": plain_sub(1),
            "data_sub": data_sub(1)}


def _outcome(obj: Any, op: Callable[[Any], None]) -> str:
    try:
        op(obj)
    except Exception as err:  # the type and message are what is compared
        return f"{type(err).__name__}: {err}"
    return f"ok {sorted(k for k in getattr(obj, '__dict__', {}))}"


OPS: dict[str, Callable[[Any], None]] = {
    "assign a field": lambda o: setattr(o, "a", 2),
    "assign another name": lambda o: setattr(o, "z", 2),
    "delete a field": lambda o: delattr(o, "a"),
    "delete another name": lambda o: delattr(o, "z"),
}


@pytest.mark.skipif(not frozenattrs.applies(), reason="this Python builds dataclass methods its own way")
def test_installed_before_our_dataclasses() -> None:
    assert dataclasses._frozen_get_del_attr is frozenattrs.frozen_methods  # type: ignore[attr-defined]
    assert Disk.__setattr__.__code__ is frozenattrs.frozen_methods(Disk, [])[0].__code__


@pytest.mark.skipif(not frozenattrs.applies(), reason="this Python builds dataclass methods its own way")
@pytest.mark.parametrize("kind", ["base", "slotted", "empty", "plain_sub", "data_sub"])
@pytest.mark.parametrize("op", list(OPS))
def test_same_behaviour_as_the_generated_methods(kind: str, op: str) -> None:
    with factory(frozenattrs._stock):
        stock = _classes()[kind]
    with factory(frozenattrs.frozen_methods):
        ours = _classes()[kind]
    assert _outcome(ours, OPS[op]) == _outcome(stock, OPS[op])


def test_the_generated_methods_are_named_as_dataclasses_expects() -> None:
    setter, deleter = frozenattrs.frozen_methods(int, [])
    assert (setter.__name__, deleter.__name__) == ("__setattr__", "__delattr__")


def test_not_installed_where_dataclasses_is_not_as_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 13, 0))
    assert not frozenattrs.applies()
