"""Frozen dataclasses' `__setattr__` and `__delattr__` as closures instead of code compiled per class.

On Python 3.11 and 3.12, `dataclass(frozen=True)` writes both methods as source text and compiles each
with `exec`: about 0.15 ms a class. The CLI defines some 100 frozen classes at every start, so that is
about 15 ms of every `plan` and `apply` (measured: importing what `apply` needs, 94 -> 78 ms, median of
25). The two methods differ between classes only in the class and its field names, so `install()` gives
dataclasses a factory returning closures over those: the same checks, the same FrozenInstanceError
messages, the same `super(cls, self)` call as the generated code.

It replaces a private function of the standard library, so it does so only where that function is the
one known here (its name and parameters; Python 3.13 builds methods differently and is left alone).
Pure: no I/O. `reconciler/__init__.py` installs it before any of our dataclasses is defined.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

_Setattr = Callable[[Any, str, Any], None]
_Delattr = Callable[[Any, str], None]

_stock: Callable[..., tuple[_Setattr, _Delattr]] | None = getattr(dataclasses, "_frozen_get_del_attr", None)


def frozen_methods(cls: type, fields: Sequence[dataclasses.Field[Any]],
                   globals: dict[str, Any] | None = None) -> tuple[_Setattr, _Delattr]:
    """`__setattr__` and `__delattr__` of the frozen dataclass `cls` (dataclasses' signature: `globals`
    is the namespace the generated code would run in, unused here)."""
    names = frozenset(f.name for f in fields)
    frozen = dataclasses.FrozenInstanceError

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise frozen(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)  # type: ignore[arg-type]  # mypy: super() outside a class

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise frozen(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)  # type: ignore[arg-type]

    return __setattr__, __delattr__


def applies() -> bool:
    """Whether this interpreter's dataclasses has the factory `install` replaces, as it is known here."""
    code = getattr(_stock, "__code__", None)
    return (sys.version_info[:2] in ((3, 11), (3, 12)) and code is not None
            and code.co_varnames[:code.co_argcount] == ("cls", "fields", "globals"))


def install() -> None:
    if applies():
        dataclasses._frozen_get_del_attr = frozen_methods  # type: ignore[attr-defined]
