"""Which migration targets a source can reach: a loopback or unspecified target address is refused
between two machines (the stream would go to the source host's own port), allowed on one machine."""

from __future__ import annotations

import pytest

from reconciler.executor.migrate import unreachable_target
from reconciler.model import NodeSpec, SshSpec


def local(name: str, address: str = "127.0.0.1") -> NodeSpec:
    return NodeSpec(name, f"/srv/{name}", address=address)


def remote(name: str, address: str, host: str | None = None, port: int = 22) -> NodeSpec:
    return NodeSpec(name, f"/srv/{name}", address=address, ssh=SshSpec(host=host or address, port=port))


REFUSED = ("node b's address {addr} is a{n} {kind} address, which node a (on another machine) cannot "
           "migrate to; set node b's address to one that a's host reaches")

CASES = [
    # (source, target, refused with (address, kind) or None)
    (local("a"), local("b"), None),  # one machine: loopback is right
    (local("a", "0.0.0.0"), local("b", "::"), None),
    (remote("a", "198.18.0.11"), remote("b", "198.18.0.12"), None),
    (remote("a", "198.18.0.11"), remote("b", "127.0.0.1", host="198.18.0.12"), ("127.0.0.1", "loopback")),
    (remote("a", "198.18.0.11"), remote("b", "::1", host="198.18.0.12"), ("::1", "loopback")),
    (remote("a", "198.18.0.11"), remote("b", "0.0.0.0", host="198.18.0.12"), ("0.0.0.0", "unspecified")),
    (remote("a", "198.18.0.11"), remote("b", "localhost", host="b.example"), ("localhost", "loopback")),
    (local("a"), remote("b", "127.0.0.1", host="198.18.0.12"), ("127.0.0.1", "loopback")),
    (remote("a", "198.18.0.11"), local("b"), ("127.0.0.1", "loopback")),
    # two nodes on one remote machine (one SSH endpoint): loopback between them is fine
    (remote("a", "127.0.0.1", host="198.18.0.12"), remote("b", "127.0.0.1", host="198.18.0.12"), None),
    # the same host on another SSH port is another endpoint: treated as another machine
    (remote("a", "127.0.0.1", host="h"), remote("b", "127.0.0.1", host="h", port=2222),
     ("127.0.0.1", "loopback")),
    # an SSH host on this machine's loopback is this machine
    (local("a"), remote("b", "127.0.0.1", host="127.0.0.1"), None),
    (remote("a", "198.18.0.11"), remote("b", "b.example"), None),  # a host name: resolved on the source
]


@pytest.mark.parametrize(("source", "target", "refused"), CASES)
def test_unreachable_target(source: NodeSpec, target: NodeSpec, refused: tuple[str, str] | None) -> None:
    expected = None
    if refused is not None:
        addr, kind = refused
        expected = REFUSED.format(addr=addr, kind=kind, n="n" if kind == "unspecified" else "")
    assert unreachable_target(source, target) == expected
