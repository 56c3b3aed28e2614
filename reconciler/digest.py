"""SHA-256 hex digests without hashlib's import.

hashlib loads OpenSSL (libcrypto) at import: 1-5 ms of a CLI run that hashes one short string (an
instance's spec, a socket name). CPython's own SHA-256 module (`_sha256` up to 3.11, `_sha2` from 3.12)
gives the same digest and loads in a fraction of that; hashlib is the fallback where neither exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _constructor() -> Callable[[bytes], Any]:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment,unused-ignore]
    return sha256  # type: ignore[no-any-return,unused-ignore]


sha256: Callable[[bytes], Any] = _constructor()
"""A new SHA-256 hash object (update, hexdigest), as hashlib.sha256."""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 digest of `data`, as 64 lowercase hex digits."""
    return str(sha256(data).hexdigest())
