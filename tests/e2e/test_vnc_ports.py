"""End-to-end, real QEMU: the VNC display's fixed port on a migration target, and VNC passwords.

A migration target that cannot bind its VNC display (the source holds it: two nodes on one machine with
different addresses, so nothing could foresee it) fails once, at once, with a line that names the display;
it is not taken for a migration-port clash, retried with every port of the range and reported as "no free
migration port". A display with a passwordFile offers VNC authentication (RFB security type 2), not None.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Guest
from executor.kit import World, make_world

from e2e.vncauth import authenticate, des_encrypt_block, security_types
from reconciler.actual import RunState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def _free_display() -> int:
    """A VNC display whose port nothing listens on now (tests run in parallel on one machine)."""
    for display in random.sample(range(20, 100), 80):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 5900 + display))
            except OSError:
                continue
            return display
    raise AssertionError("no free VNC display")


def _counting_qemu(world: World, counter: Path) -> Path:
    """A QEMU binary for node-b that counts its launches (not `--version`) and keeps argv[0] as is."""
    wrapper = world.root / "qemu-counting"
    wrapper.write_text(f'#!/bin/bash\n[ "$1" = --version ] || echo launch >> {counter}\n'
                       'exec -a "$0" qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _node_b(world: World, **spec: str) -> None:
    path = world.manifests / "nodes.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    (b,) = [d for d in docs if d["metadata"]["name"] == "node-b"]
    b["spec"].update(spec)
    path.write_text(yaml.safe_dump_all(docs))


def test_vnc_display_taken_on_the_target_is_one_clear_error(world: World, tmp_path: Path) -> None:
    counter = tmp_path / "launches"
    # node-b has its own address, so validate and the plan see two hosts; both are this machine
    _node_b(world, address="127.0.0.2", qemuBinary=str(_counting_qemu(world, counter)))
    display = _free_display()
    world.instance("web1", "node-a", vnc={"display": display})
    assert world.apply().code == 0
    (pid,) = world.qemu_pids("web1")
    world.instance("web1", "node-b", vnc={"display": display})
    t0 = time.monotonic()
    done = world.apply()
    elapsed = time.monotonic() - t0
    assert done.code == 1, done.text
    launches = counter.read_text().splitlines()
    assert len(launches) == 1, launches  # one target QEMU, not one per port of the migration range
    port = 5900 + display
    assert (f"error: web1: migrate failed: VNC display {display} (127.0.0.1 port {port}) is already in use "
            f"on node node-b's host: qemu-counting: -vnc 127.0.0.1:{display}: Failed to find an available "
            "port: Address already in use") in done.err.splitlines(), done.text
    assert "no free migration port" not in done.text
    assert elapsed < 20, elapsed
    assert world.qemu_pids("web1") == [pid]
    (inst,) = world.actual().find("web1")
    assert (inst.node, inst.state) == ("node-a", RunState.RUNNING)


def test_vnc_password_file_offers_vnc_authentication(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "web1.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    plain, guarded = _free_display(), _free_display()
    while guarded == plain:
        guarded = _free_display()
    world.instance("open", "node-a", vnc={"display": plain})
    world.instance("guarded", "node-a", vnc={"display": guarded, "passwordFile": str(secret)})
    done = world.apply()
    assert done.code == 0, done.text
    assert security_types(5900 + plain) == [1]  # None: anyone may connect
    assert security_types(5900 + guarded) == [2]  # VNC authentication only
    assert authenticate(5900 + guarded, "s3cret")  # the file's password (without its newline) was set
    assert not authenticate(5900 + guarded, "wrong")
    argv = Path(f"/proc/{world.qemu_pids('guarded')[0]}/cmdline").read_bytes().split(b"\0")
    assert not any(b"s3cret" in a for a in argv)
    assert f"127.0.0.1:{guarded},password=on".encode() in argv


def test_des_known_answer() -> None:
    """The test's DES (FIPS 46 worked example), so a failed authentication above means the server."""
    key, block = bytes.fromhex("133457799BBCDFF1"), bytes.fromhex("0123456789ABCDEF")
    assert des_encrypt_block(key, block).hex() == "85e813540f0ab405"


def test_vnc_password_file_readable_by_others_is_refused_before_launch(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "web1.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    world.instance("guarded", "node-a", vnc={"display": _free_display(), "passwordFile": str(secret)})
    done = world.apply()
    assert done.code == 1, done.text
    assert f"vnc.passwordFile {secret}: mode 0644 lets others read it; use chmod 600" in done.text
    assert world.qemu_pids("guarded") == []


def test_plan_refuses_a_migration_between_nodes_sharing_an_address(world: World) -> None:
    display = _free_display()
    world.instance("web1", "node-a", vnc={"display": display})
    assert world.apply().code == 0
    (pid,) = world.qemu_pids("web1")
    world.instance("web1", "node-b", vnc={"display": display})
    line = (f"  x instance web1: cannot migrate node-a -> node-b: VNC display {display} "
            f"(port {5900 + display} on 127.0.0.1) stays held by the source until the migration ends "
            "(node-a and node-b share the address); change vnc.display with the node to move it by a restart")
    plan = world.cli("plan")
    assert plan.code == 1 and line in plan.out.splitlines(), plan.text
    applied = world.apply()
    assert applied.code == 1 and line in applied.out.splitlines(), applied.text
    assert world.qemu_pids("web1") == [pid]
    assert not Path(world.paths("node-b", "web1").dir).exists()
