"""Which listener a failed launch could not bind, from QEMU's own error text (executor.start.bind_failure).

Only the migration listener's port (`-incoming`) is worth a retry with the next port; a VNC display (or any
other listener) stays taken whatever the migration port, so it is one clear error at once.
"""

# ruff: noqa: E501  (expected lines are kept whole, as users see them)
from __future__ import annotations

import pytest

from reconciler.argv import IncomingSpec
from reconciler.executor.start import PortInUse, bind_failure, failed_option
from reconciler.model import InstanceSpec, Vnc

SPEC = InstanceSpec(name="web1", memory_mib=128, vnc=Vnc(display=7))
INCOMING = IncomingSpec("127.0.0.1", 49152)
VNC_CLASH = "qemu-system-x86_64: -vnc 127.0.0.1:7: Failed to find an available port: Address already in use"
INCOMING_CLASH = ("qemu-system-x86_64: -incoming tcp:127.0.0.1:49152: Failed to find an available port: "
                  "Address already in use")


@pytest.mark.parametrize(
    ("detail", "option"),
    [
        (VNC_CLASH, "-vnc"),
        (INCOMING_CLASH, "-incoming"),
        ("/usr/bin/qemu-system-x86_64: -incoming tcp:[::1]:5: Failed: Address already in use", "-incoming"),
        ("warning: something / qemu-system-x86_64: -vnc [::1]:7: Failed to find an available port: Address already in use", "-vnc"),
        ("Address already in use", None),
        ("QEMU exited with status 1", None),
    ],
)
def test_failed_option(detail: str, option: str | None) -> None:
    assert failed_option(detail) == option


def test_migration_port_clash_is_retried() -> None:
    err = bind_failure(SPEC, "node-b", INCOMING, INCOMING_CLASH)
    assert isinstance(err, PortInUse) and err.detail == INCOMING_CLASH


def test_vnc_clash_on_a_migration_target_is_not_a_port_clash() -> None:
    err = bind_failure(SPEC, "node-b", INCOMING, VNC_CLASH)
    assert err is not None and not isinstance(err, PortInUse)
    assert err.detail == (
        "VNC display 7 (127.0.0.1 port 5907) is already in use on node node-b's host: "
        "qemu-system-x86_64: -vnc 127.0.0.1:7: Failed to find an available port: Address already in use"
    )


def test_unattributed_clash_is_one_error() -> None:
    err = bind_failure(SPEC, "node-b", INCOMING, "Address already in use")
    assert err is not None and not isinstance(err, PortInUse)
    assert err.detail == "a port QEMU listens on is already in use on node node-b's host: Address already in use"


def test_incoming_clash_without_incoming_and_other_failures() -> None:
    err = bind_failure(SPEC, "node-a", None, INCOMING_CLASH)
    assert err is not None and not isinstance(err, PortInUse)
    assert bind_failure(SPEC, "node-a", INCOMING, "QEMU exited with status 1") is None
