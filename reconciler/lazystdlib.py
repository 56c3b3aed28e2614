"""Import `inspect` and `ssl` only when something uses them: dataclasses and asyncio import them at their
top for calls our commands never make.

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

ssl: asyncio's base_events, selector_events and sslproto import it at their top (about 10 ms of every
start and stop: _ssl maps OpenSSL's libraries), and need it only for a TLS connection, which no command of
ours opens. So `defer()` also puts a finder on sys.meta_path that, the first time asyncio is imported,
runs asyncio's own loader with ssl unimportable, then gives those modules an `_AsyncioSSL` as their `ssl`
(sys.modules never holds it: `import ssl` anywhere still imports the real module). Its first attribute
looked up imports ssl (if nobody has yet), binds the real module into those modules, and sets sslproto's
SSLAgainErrors, the one name sslproto derives from ssl at import; every TLS path of asyncio looks up an
attribute of `ssl` first (`SSLContext`, `create_default_context`, `MemoryBIO` in SSLProtocol's
constructor) before it can reach an `except SSLAgainErrors`. One attribute does not load ssl:
`SSLSocket`, which asyncio's sock_* methods check every socket against; while ssl is not imported no
SSLSocket can exist, so it is a class nothing is an instance of. Python 3.11 and 3.12 only, whose asyncio
has exactly these uses (tests/unit/test_lazystdlib.py runs TLS through it).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

DEFERRED = ("inspect",)
# asyncio's modules that import ssl (proactor_events: Windows).
_SSL_USERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto", "asyncio.proactor_events")


class _StandIn(types.ModuleType):
    """A module not imported yet: the first missing attribute imports it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer() -> None:
    """Put a stand-in in place of each DEFERRED module that is not imported yet, and have asyncio (if it is
    not imported yet) imported without ssl."""
    if (sys.version_info[:2] in ((3, 11), (3, 12)) and "asyncio" not in sys.modules
            and "ssl" not in sys.modules and not any(isinstance(f, _AsyncioFinder) for f in sys.meta_path)):
        sys.meta_path.insert(0, _AsyncioFinder())
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


class _NoSSLSocket:
    """ssl.SSLSocket while ssl is not imported: no socket is an instance of it."""


class _AsyncioSSL:
    """What asyncio's modules see as `ssl` until they use it (see the module docstring)."""

    def __getattr__(self, attr: str) -> Any:
        real = sys.modules.get("ssl")
        if real is None:
            if attr == "SSLSocket":
                return _NoSSLSocket
            real = importlib.import_module("ssl")
        _bind_ssl(real)
        return getattr(real, attr)


def _swap_ssl(is_old: Callable[[object], bool], new: object) -> None:
    """Set the `ssl` global of each of asyncio's modules that import it to `new`, where it `is_old`."""
    for name in _SSL_USERS:
        module = sys.modules.get(name)
        if module is not None and "ssl" in module.__dict__ and is_old(module.__dict__["ssl"]):
            module.__dict__["ssl"] = new


def _bind_ssl(real: Any) -> None:
    _swap_ssl(lambda v: isinstance(v, _AsyncioSSL), real)
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and "SSLAgainErrors" not in sslproto.__dict__:
        sslproto.__dict__["SSLAgainErrors"] = (real.SSLWantReadError, real.SSLSyscallError)


class _AsyncioLoader:
    """asyncio's own loader, run with ssl unimportable; then the `_AsyncioSSL` goes in."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, attr: str) -> Any:  # create_module and the rest: asyncio's loader's
        return getattr(self.inner, attr)

    def exec_module(self, module: types.ModuleType) -> None:
        if "ssl" in sys.modules:  # imported already: nothing to defer (and nothing to clobber)
            self.inner.exec_module(module)
            return
        sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
        try:
            self.inner.exec_module(module)
        finally:
            if "ssl" in sys.modules and sys.modules["ssl"] is None:
                del sys.modules["ssl"]
        _swap_ssl(lambda v: v is None, _AsyncioSSL())


class _AsyncioFinder:
    """On sys.meta_path until asyncio is imported: hands asyncio's spec over with `_AsyncioLoader`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "asyncio":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AsyncioLoader(spec.loader)  # type: ignore[assignment]  # a Loader by duck typing
        return spec
