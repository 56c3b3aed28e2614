"""QEMU's option syntax: escaping values and rejecting what cannot be escaped.

QEMU splits `key=value,key=value` option strings on commas; a comma inside a value is written `,,`
(QemuOpts and keyval agree on this). Nothing else is special inside a value, but control characters
(newline, NUL) in paths are refused: NUL cannot be passed in argv at all, and the others are almost
certainly manifest mistakes that would produce files nobody can type. Pure functions; errors are
`BadValue(field, detail)`, which the argv builder turns into `errors.ArgvError` with the instance name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_HOST = re.compile(r"[A-Za-z0-9.:-]+")  # a hostname, an IPv4 or an IPv6 address (no brackets, no zone)
_TOKEN = re.compile(r"[A-Za-z0-9._-]+")  # a machine type, a device model


class BadValue(Exception):
    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def escape(value: str) -> str:
    """A value safe inside a comma-separated QEMU option string."""
    return value.replace(",", ",,")


def join(head: str | None, pairs: Iterable[tuple[str, str]]) -> str:
    """`head,k1=v1,k2=v2` with every value escaped. Keys are ours (constants), never escaped."""
    parts = [] if head is None else [head]
    parts.extend(f"{k}={escape(v)}" for k, v in pairs)
    return ",".join(parts)


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


def text(field: str, value: str) -> str:
    """Any non-empty text without control characters."""
    if not value:
        raise BadValue(field, "must not be empty")
    m = _CONTROL.search(value)
    if m:
        raise BadValue(field, f"contains the control character {m.group()!r}: {value!r}")
    return value


def no_control(field: str, value: str) -> str:
    """Text that may be empty but has no control characters."""
    return text(field, value) if value else value


def path(field: str, value: str) -> str:
    """An absolute path without control characters (QEMU daemonizes into `/`, so relative paths lie)."""
    text(field, value)
    if not value.startswith("/"):
        raise BadValue(field, f"must be an absolute path: {value!r}")
    return value


def token(field: str, value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise BadValue(field, f"must be letters, digits, '.', '_' or '-': {value!r}")
    return value


def mac(field: str, value: str) -> str:
    if not _MAC.fullmatch(value):
        raise BadValue(field, f"must be a MAC address like 52:54:00:12:34:56 (lowercase): {value!r}")
    if int(value[:2], 16) & 1:
        raise BadValue(field, f"is a multicast address (the first octet is odd): {value}")
    return value


def host(field: str, value: str) -> str:
    """A host for `host:port` syntax; IPv6 addresses come back in brackets."""
    if not _HOST.fullmatch(value):
        raise BadValue(field, f"must be a hostname or an IP address: {value!r}")
    return f"[{value}]" if ":" in value else value


def ifname(field: str, value: str) -> str:
    """A Linux network interface name (IFNAMSIZ 16 including the NUL; no '/', ':' or whitespace)."""
    if not 1 <= len(value.encode()) <= 15 or value in (".", "..") or re.search(r"[/:\s]", value):
        raise BadValue(field, f"must be a network interface name of 1-15 bytes without '/', ':' or spaces: "
                              f"{value!r}")
    return value
