"""`Node.port_free` on this machine: a port in use is not free; a node address that is not one of the
host's is one clear error naming the node and the address (not an internal OSError)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from reconciler.errors import NodeAddressError
from reconciler.model import NodeSpec
from reconciler.node import LocalNode


def test_a_port_in_use_is_not_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        node = LocalNode(NodeSpec("n1", "/nonexistent"))
        assert asyncio.run(node.port_free(port)) is False
    assert asyncio.run(node.port_free(port)) is True


def test_an_address_not_of_this_host_is_a_clear_error() -> None:
    node = LocalNode(NodeSpec("n1", "/nonexistent", address="198.18.255.254"))  # bound nowhere here
    with pytest.raises(NodeAddressError) as info:
        asyncio.run(node.port_free(49152))
    assert str(info.value) == (
        "node n1: its address 198.18.255.254 is not an address of its host (Cannot assign requested "
        "address); migration targets listen there: set the node's address to one of the host's")
