"""Where an instance's files live under a node's state directory.

One place decides every path the argv builder, the executor, discovery and the bridge hook agree on, so
none of them joins strings on its own. Pure: nothing here touches the filesystem.

    <state_dir>/node.lock                       the node lock (one writer per node)
    <state_dir>/instances/<name>/qemu.pid       QEMU's -pidfile
    <state_dir>/instances/<name>/qmp.sock       QMP for commands (the executor)
    <state_dir>/instances/<name>/qmp-watch.sock QMP for a watcher (QEMU serves one client per socket)
    <state_dir>/instances/<name>/serial.sock    serial console (when serial_console is on)
    <state_dir>/instances/<name>/serial.log     serial output of the current process (optional)
    <state_dir>/instances/<name>/record.json    the applied record
    <state_dir>/instances/<name>/intent.json    what an unfinished action was about to do
    <state_dir>/instances/<name>/nic-<ifname>.json  facts for the bridge hook (see reconciler.hooks.ifup)
    <state_dir>/instances/<name>/nvram.fd       UEFI variables (firmware uefi), kept across restarts
    <state_dir>/instances/<name>/agent.sock     qemu-guest-agent's channel (guestAgent)
    <state_dir>/instances/<name>/seed.iso       the cloud-init seed (cloudInit), rewritten at each start
    <state_dir>/images/<digest of the path>.json    a disk image the reconciler created (provision.images)

Instance names are DNS labels (RFC 1123), so a name can never contain `/` or be `..` and escape the state
directory. Unix socket paths must fit `sun_path` (108 bytes including the terminating NUL);
`check_socket_path` rejects longer ones with a typed error instead of letting QEMU fail with a vague
bind error.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from reconciler import digest
from reconciler.errors import ReconcilerError
from reconciler.model import NodeSpec
from reconciler.values import Value

SUN_PATH_MAX = 107  # bytes of a unix socket path: sizeof(sun_path) == 108, minus the NUL
NAME_MAX = 63  # a DNS label
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class InvalidInstanceName(ReconcilerError):
    """A name that cannot be an instance's directory (not a DNS label)."""

    name: str
    detail: str

    @property
    def message(self) -> str:
        return f"instance name {self.name!r}: {self.detail}"


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class SocketPathTooLong(ReconcilerError):
    """A unix socket path does not fit sun_path; the state directory must be shorter."""

    path: str
    length: int  # bytes, UTF-8

    @property
    def message(self) -> str:
        return (f"unix socket path is {self.length} bytes, over the limit of {SUN_PATH_MAX} (sun_path): "
                f"{self.path}; use a shorter state directory")


def validate_name(name: str) -> str:
    """Return `name` if it is a DNS label (lowercase letters, digits, '-', at most 63); raise otherwise."""
    if not name:
        raise InvalidInstanceName(name, "must not be empty")
    if len(name) > NAME_MAX:
        raise InvalidInstanceName(name, f"is {len(name)} characters, over the limit of {NAME_MAX}")
    if not _DNS_LABEL.fullmatch(name):
        raise InvalidInstanceName(
            name, "must be a DNS label: lowercase letters, digits and '-', starting and ending alphanumeric")
    return name


def check_socket_path(path: str) -> str:
    """Return `path` if it fits a unix socket address; raise SocketPathTooLong otherwise."""
    length = len(path.encode("utf-8", "surrogateescape"))
    if length > SUN_PATH_MAX:
        raise SocketPathTooLong(path, length)
    return path


def node_lock(node: NodeSpec) -> str:
    return posixpath.join(node.state_dir, "node.lock")


def owned_image_record(node: NodeSpec, image: str) -> str:
    """The ownership record of the disk image at `image` (kept apart from any instance's files: an image
    outlives the instance that created it under deletePolicy Retain, and stays known as ours)."""
    name = digest.sha256_hex(image.encode("utf-8", "surrogateescape"))[:32]
    return posixpath.join(node.state_dir, "images", f"{name}.json")


def instances_dir(node: NodeSpec) -> str:
    return posixpath.join(node.state_dir, "instances")


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class InstancePaths(Value):
    """Every file of one instance on one node."""

    dir: str
    pidfile: str
    qmp: str  # control socket: the executor's
    qmp_watch: str  # second QMP socket: a watcher's (events) without contending for the first
    serial: str
    serial_log: str
    record: str
    intent: str

    @property
    def sockets(self) -> tuple[str, ...]:
        return (self.qmp, self.qmp_watch, self.serial)

    @property
    def nvram(self) -> str:
        """The UEFI variable store (firmware uefi): the instance's own, kept across restarts."""
        return posixpath.join(self.dir, "nvram.fd")

    @property
    def agent(self) -> str:
        """qemu-guest-agent's channel (guestAgent), a socket QEMU serves (0600)."""
        return posixpath.join(self.dir, "agent.sock")

    @property
    def seed(self) -> str:
        """The cloud-init NoCloud seed ISO (0600: user-data may hold secrets), written at each start."""
        return posixpath.join(self.dir, "seed.iso")

    def nic_file(self, ifname: str) -> str:
        """The bridge hook's facts for the tap device `ifname`."""
        from reconciler.hooks.ifup import nic_file_name  # the hook's own rule (it runs standalone)

        return posixpath.join(self.dir, nic_file_name(ifname))


def instance_paths(node: NodeSpec, name: str) -> InstancePaths:
    """The paths of instance `name` on `node` (the name is validated; socket lengths are not: see
    `check_sockets`)."""
    d = posixpath.join(instances_dir(node), validate_name(name))
    return InstancePaths(
        dir=d,
        pidfile=posixpath.join(d, "qemu.pid"),
        qmp=posixpath.join(d, "qmp.sock"),
        qmp_watch=posixpath.join(d, "qmp-watch.sock"),
        serial=posixpath.join(d, "serial.sock"),
        serial_log=posixpath.join(d, "serial.log"),
        record=posixpath.join(d, "record.json"),
        intent=posixpath.join(d, "intent.json"),
    )


def check_sockets(paths: InstancePaths) -> InstancePaths:
    """Return `paths` if every socket fits sun_path; raise SocketPathTooLong for the first that does not."""
    for sock in paths.sockets:
        check_socket_path(sock)
    return paths
