"""The compiled code of dataclasses' generated methods, cached on disk as Python caches a module's.

`dataclass` writes each method it generates (`__init__`, and `__eq__`/`__hash__` where a class keeps
dataclass's own) as source text and compiles it with `exec`: about 0.12 ms a method, 13-16 ms of every
`plan` (some 110 methods). The text of a method is the same from one run to the next, and so is its
code. `install()` gives the dataclasses module an `exec` of its own (a module global, found before the
builtin; nothing else changes) that takes the code for a text from a cache loaded once, and compiles only
a text it has not seen, exactly as the builtin would (no compiler flags inherited). `save()`, called by
the CLI on its way out, writes the cache when the run compiled something new.

The cache is keyed by the exact text (a changed class is a miss) and by the interpreter (its version
string heads the file: another Python never reads it); a file that does not load is ignored. It is an
entry of the user's cache (reconciler.usercache), beside the schema check's, which holds code run the
same way.
"""

from __future__ import annotations

import dataclasses
import sys
from types import CodeType
from typing import Any

from reconciler import usercache

# Keyed by the text; past 4096 entries (many versions of the classes), a save keeps only this run's.
TABLE: usercache.Table[str, CodeType] = usercache.Table(
    "dataclass-code", f"{sys.version}\0dataclass code v1\n".encode(),
    lambda k, v: isinstance(k, str) and isinstance(v, CodeType), 4096)


def cached_exec(source: Any, globals: dict[str, Any] | None = None,
                locals: dict[str, Any] | None = None) -> None:
    """The builtin `exec`, with the code of a source text taken from the cache when it is there."""
    if isinstance(source, str):
        code = TABLE.get(source)
        if code is None:
            # dont_inherit: the builtin compiles dataclasses' text with dataclasses' flags (none), not ours
            code = compile(source, "<string>", "exec", dont_inherit=True)
            TABLE.put(source, code)
        source = code
    exec(source, globals, locals)  # the builtin, on dataclasses' own generated code


def install() -> None:
    """Load the cache and give dataclasses the cached `exec` (a module global shadowing the builtin)."""
    TABLE.load()
    dataclasses.exec = cached_exec  # type: ignore[attr-defined]


def save() -> None:
    """Write the cache if this run compiled a text it did not have (atomically; errors are ignored)."""
    TABLE.save()
