"""sd_notify: tell systemd (Type=notify) when the daemon is ready, what it is doing, and that it stops.

The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by $NOTIFY_SOCKET (a leading
'@' means the abstract namespace). It needs no library: a few lines of stdlib socket code. Without
$NOTIFY_SOCKET (not under systemd) every call does nothing. Failures are swallowed: a missing
notification must never stop reconciliation.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # vsock and other schemes are not supported


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> bool:
        """Send `KEY=value` lines (keys upper-cased); True when the datagram went out."""
        if self._address is None:
            return False
        message = "\n".join(f"{k.upper()}={v.replace(chr(10), ' ')}" for k, v in fields.items())
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), self._address)
            return True
        return False

    def ready(self, status: str) -> bool:
        return self.send(ready="1", status=status, mainpid=str(os.getpid()))

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def stopping(self, status: str) -> bool:
        return self.send(stopping="1", status=status)
