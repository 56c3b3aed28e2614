"""Fixed TCP ports an instance listens on, and when two listeners on one host clash.

A VNC display is a fixed port (5900 + display) that QEMU binds on the instance's `vnc.bind` address of the
host that runs it. Nodes with the same `address` are taken to be one host (as for migration ports), so a
port may be claimed once per address, across nodes: two instances on nodes that share an address cannot
use the same display, nor can a migration between such nodes keep the display (the source holds it until
the migration ends). Two binds clash when they are the same address or one of them is a wildcard
(0.0.0.0, ::), as the kernel sees it. Pure functions, shared by validate, the watch daemon and the planner.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import InstanceSpec
from reconciler.values import Value

VNC_BASE_PORT = 5900


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Listener(Value):
    """One fixed port an instance binds (today only a VNC display's)."""

    bind: str
    port: int
    display: int

    @property
    def what(self) -> str:
        """For messages: "VNC display 1"."""
        return f"VNC display {self.display}"


def vnc_port(display: int) -> int:
    return VNC_BASE_PORT + display


def fixed_listeners(spec: InstanceSpec) -> tuple[Listener, ...]:
    """The fixed ports `spec` binds (the migration listener's port is chosen per migration, not fixed)."""
    vnc = spec.vnc
    if vnc is None:
        return ()
    return (Listener(vnc.bind, VNC_BASE_PORT + vnc.display, vnc.display),)


def is_wildcard(bind: str) -> bool:
    """Whether `bind` is an address meaning every address of the host (0.0.0.0, ::)."""
    import ipaddress  # here: only instances with listeners need it

    try:
        return ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        return False


def binds_overlap(a: str, b: str) -> bool:
    """Whether listeners on `a` and `b` (same port, same host) would clash; unparsable ones are assumed to."""
    import ipaddress

    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return True
    return x.is_unspecified or y.is_unspecified or x == y


def clash(a: Listener, b: Listener) -> bool:
    return a.port == b.port and binds_overlap(a.bind, b.bind)
