"""The compiled form of regular expressions, cached on disk as classcode caches dataclass methods.

Every run compiles the same few dozen regular expressions at import (the YAML reader's, the units', the
schema check's, argparse's, json's): 4-5 ms of each CLI run, for patterns that never change. `re` turns a
pattern into a list of integers (its parser, then its code generator) and hands that list to `_sre.compile`,
which only builds the object; the list is the expensive part, and it depends on nothing but the pattern,
its flags and the interpreter. `install()` gives re's compiler module a `compile` that takes the list from
a cache loaded once, and runs the stdlib's own parser and code generator only for a pattern it has not
seen; `save()`, called by the CLI on its way out, writes the cache when the run added something.

The cache is keyed by the interpreter's version and `_sre.MAGIC` (another Python never reads it), and by
the exact pattern and flags. Installed on Python 3.11 and 3.12 only, whose `re._compiler.compile` does
exactly these steps (a newer one keeps the stdlib's untouched). A pattern compiled with DEBUG, or given
as an already parsed pattern, goes to the stdlib's function as before.
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]  # re's C half: already loaded by `re`
import sys
from collections.abc import Callable
from typing import Any

from reconciler import usercache

Args = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]  # _sre.compile's, after pattern
Key = tuple[str | bytes, int]  # (pattern, flags)

_CACHE_KEY = f"{sys.version}\0{_sre.MAGIC}\0regex code v1\n".encode()


def _valid(key: Any, args: Any) -> bool:
    return (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str | bytes)
            and type(key[1]) is int and isinstance(args, tuple) and len(args) == 5)


# Past 2048 entries, a save keeps only this run's.
TABLE: usercache.Table[Key, Args] = usercache.Table("regex-code", _CACHE_KEY, _valid, 2048)
_original: Callable[..., Any] | None = None


def compile_args(pattern: str | bytes, flags: int) -> Args:
    """What re._compiler.compile passes to `_sre.compile` after the pattern: the stdlib's own parser and
    code generator, run as it runs them."""
    from re import _compiler, _parser  # type: ignore[attr-defined]

    parsed = _parser.parse(pattern, flags)
    code = _compiler._code(parsed, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    # int(): the opcodes are int subclasses (named constants), which marshal does not store
    return (int(flags | parsed.state.flags), [int(c) for c in code], parsed.state.groups - 1, groupindex,
            tuple(indexgroup))


def cached_compile(p: Any, flags: int = 0) -> Any:
    """re._compiler.compile, with the code of a pattern text taken from the cache when it is there."""
    if (type(p) is str or type(p) is bytes) and not flags & 128:  # 128: re.DEBUG, which prints the code
        key = (p, int(flags))
        args = TABLE.get(key)
        if args is None:
            args = compile_args(p, int(flags))
            TABLE.put(key, args)
        return _sre.compile(p, *args)
    assert _original is not None
    return _original(p, flags)


def install() -> None:
    """Load the cache and give re's compiler module the cached `compile` (3.11 and 3.12 only)."""
    global _original
    if sys.version_info[:2] not in ((3, 11), (3, 12)) or _original is not None:
        return
    from re import _compiler  # type: ignore[attr-defined]

    TABLE.load()
    _original = _compiler.compile
    _compiler.compile = cached_compile


def save() -> None:
    """Write the cache if this run added a pattern (atomically; errors are ignored)."""
    TABLE.save()
