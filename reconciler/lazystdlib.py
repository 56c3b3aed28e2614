"""Import `inspect` only when something uses it: dataclasses imports it for one rare call.

dataclasses imports inspect at its top, and inspect brings ast, dis, tokenize, linecache and token:
about 6 ms of every CLI run. dataclasses calls it only to write a docstring for a class that has none
(every dataclass of ours has one), and `plan`, `status` and `validate` use nothing else of it. So before
dataclasses is first imported, `defer()` puts a stand-in into sys.modules: a module object that holds
only the spec. The first name looked up on it that it lacks imports the real module (which then takes
its place in sys.modules) and copies the real module's names into the stand-in, so whoever imported the
stand-in sees the real functions from then on. asyncio's tasks and qemu.qmp use inspect, in the
commands that need them; there it is simply loaded a little later.

Not importlib.util.LazyLoader: on Python 3.11 the import statement itself reads the module's `__spec__`,
which makes LazyLoader load it at once. A process that imported inspect before us (pytest, a program
using us as a library) keeps its module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

DEFERRED = ("inspect",)


class _StandIn(types.ModuleType):
    """A module not imported yet: the first missing attribute imports it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer() -> None:
    """Put a stand-in in place of each DEFERRED module that is not imported yet."""
    for name in DEFERRED:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        stand_in = _StandIn(name)
        stand_in.__spec__ = spec
        stand_in.__loader__ = spec.loader
        sys.modules[name] = stand_in
