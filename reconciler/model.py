"""The domain model: what a manifest declares, as frozen values.

Everything downstream (argv builder, planner, renderer, executor) works on these types and never on raw
YAML dictionaries. The types are immutable and hashable so plans are deterministic and values can be
compared field by field. This module does no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from reconciler.values import Value

API_VERSION = "reconciler/v1"


class Kind(enum.StrEnum):
    INSTANCE = "Instance"
    NODE = "Node"
    DEFAULTS = "Defaults"


class RunStrategy(enum.StrEnum):
    """KubeVirt's runStrategy semantics.

    ALWAYS: keep it running; restart after a guest power-off or a crash.
    RERUN_ON_FAILURE: keep it running after a crash; a guest power-off leaves it stopped.
    ONCE: start it once; never restart it after it stops, for whatever reason.
    MANUAL: the reconciler never starts or stops it on its own (a person does).
    HALTED: keep it stopped.
    """

    ALWAYS = "Always"
    RERUN_ON_FAILURE = "RerunOnFailure"
    ONCE = "Once"
    MANUAL = "Manual"
    HALTED = "Halted"


class UpdatePolicy(enum.StrEnum):
    """What to do with a change that needs a new QEMU process."""

    IMMEDIATE = "Immediate"  # restart (or migrate) at once
    PENDING = "Pending"  # keep running; apply at the next restart (Proxmox pending changes)


class DiskFormat(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


class DeletePolicy(enum.StrEnum):
    """What becomes of an image the reconciler created once its disk entry or its instance is gone."""

    RETAIN = "Retain"
    DELETE = "Delete"  # only ever an image the reconciler created (provision.images ownership records)


class DiskBus(enum.StrEnum):
    VIRTIO = "virtio"
    IDE = "ide"
    SCSI = "scsi"


class CacheMode(enum.StrEnum):
    NONE = "none"
    WRITEBACK = "writeback"
    WRITETHROUGH = "writethrough"
    DIRECTSYNC = "directsync"
    UNSAFE = "unsafe"


class NicModel(enum.StrEnum):
    VIRTIO = "virtio"
    E1000 = "e1000"
    RTL8139 = "rtl8139"


class NicMode(enum.StrEnum):
    BRIDGE = "bridge"  # tap device, attached by the bridge hook
    USER = "user"  # QEMU user-mode networking (slirp), for hosts without a bridge


class Accelerator(enum.StrEnum):
    KVM = "kvm"
    TCG = "tcg"


class Firmware(enum.StrEnum):
    BIOS = "bios"  # SeaBIOS, QEMU's own
    UEFI = "uefi"  # OVMF (reconciler.firmware), with a per-instance NVRAM file


class MigrationMode(enum.StrEnum):
    LIVE = "live"
    OFFLINE = "offline"  # pause the source first (the seed's non-live migration)


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class Disk(Value):
    """A disk image attached to the instance (a file or a block device on its node)."""

    path: str
    format: DiskFormat = DiskFormat.RAW
    bus: DiskBus = DiskBus.VIRTIO
    read_only: bool = False
    cache: CacheMode = CacheMode.NONE
    boot: bool = False  # normalized: exactly one disk boots when there are disks and no kernel
    size: int | None = None  # bytes: create a blank disk (or an overlay this big) when the file is missing
    base_image: str | None = None  # create a qcow2 overlay on this raw/qcow2 image when the file is missing
    delete_policy: DeletePolicy = DeletePolicy.RETAIN

    @property
    def provisioned(self) -> bool:
        """The reconciler creates this disk when its file is missing (issue 14)."""
        return self.size is not None or self.base_image is not None


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class CloudInit(Value):
    """A cloud-init NoCloud seed (issue 14). Each part is text: inline in the manifest, or read from
    `*_file` (relative to the instance's manifest directory) when the manifests are loaded, so the spec
    (and its digest) changes when the file does. The text is never shown: plans show a digest."""

    user_data: str | None = None
    meta_data: str | None = None  # None: instance-id (name + seed digest) and local-hostname are generated
    network_config: str | None = None
    user_data_file: str | None = None  # as written in the manifest; the text above is its content
    meta_data_file: str | None = None
    network_config_file: str | None = None

    @property
    def files(self) -> tuple[tuple[str, str], ...]:
        """(part, relative path) of the parts read from files, in part order."""
        named = (("user_data", self.user_data_file), ("meta_data", self.meta_data_file),
                 ("network_config", self.network_config_file))
        return tuple((part, path) for part, path in named if path is not None)


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class KernelBoot(Value):
    """Direct kernel boot (the seed's kernel_path/initrd_path/root_path)."""

    kernel: str
    root: str
    initrd: str | None = None
    cmdline: str = ""  # extra kernel command line, appended after root= and console=


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class VncTls(Value):
    """TLS for the VNC server: a directory of x509 files (ca-cert.pem, server-cert.pem, server-key.pem)."""

    x509_dir: str


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class Vnc(Value):
    """A VNC server for the instance's display, on its node."""

    bind: str = "127.0.0.1"
    display: int = 0
    password_file: str | None = None  # on the node; read at each start and set over QMP, never in argv
    tls: VncTls | None = None


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class Nic(Value):
    """A network interface: a tap on a bridge (through the bridge hook) or user-mode networking."""

    mac: str
    model: NicModel = NicModel.VIRTIO
    mode: NicMode = NicMode.BRIDGE
    bridge: str | None = None
    ip: str | None = None  # passed to the bridge hook as IP; informational
    hook: str | None = None  # replaces the default bridge hook executable


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class Migration(Value):
    """How the instance is moved to another node: live or cold, with QEMU's migration limits."""

    mode: MigrationMode = MigrationMode.LIVE
    max_bandwidth: int = 0  # bytes per second; 0 = no cap
    max_downtime_ms: int = 300
    completion_timeout_per_gib: float = 150.0  # seconds per GiB of guest memory (KubeVirt)
    progress_timeout: float = 150.0  # seconds without progress before cancelling (KubeVirt)
    auto_converge: bool = False
    post_copy: bool = False

    def completion_timeout(self, memory_mib: int) -> float:
        """The whole-migration deadline, scaled by guest memory (at least one GiB's worth)."""
        return self.completion_timeout_per_gib * max(memory_mib / 1024.0, 1.0)


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class InstanceSpec(Value):
    """One VM's desired state, with Defaults already merged in and every default filled."""

    name: str
    memory_mib: int
    vcpus: int = 1
    # Room for live changes, fixed at boot (None: the boot value, no hotplug). max_memory_mib set also
    # adds the virtio-balloon device; above memory_mib it adds DIMM slots (`-m ...,slots=,maxmem=`).
    max_memory_mib: int | None = None
    max_vcpus: int | None = None  # above vcpus: `-smp N,maxcpus=M`, CPUs hotplugged up to it
    node: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    run_strategy: RunStrategy = RunStrategy.ALWAYS
    protect: bool = False
    update_policy: UpdatePolicy = UpdatePolicy.IMMEDIATE
    disks: tuple[Disk, ...] = ()
    kernel: KernelBoot | None = None
    acpi: bool = True
    serial_console: bool = True
    vnc: Vnc | None = None
    nics: tuple[Nic, ...] = ()
    machine: str = "pc"
    cpu_model: str | None = None
    shutdown_timeout: float = 30.0  # seconds for a graceful ACPI shutdown
    migration: Migration = field(default_factory=Migration)
    extra_args: tuple[str, ...] = ()  # escape hatch: raw QEMU arguments, shown in plans
    cloud_init: CloudInit | None = None  # a NoCloud seed ISO, attached read-only as a CD-ROM (issue 14)
    guest_agent: bool = False  # the qemu-guest-agent channel, on its own socket (issue 14)
    firmware: Firmware = Firmware.BIOS
    secure_boot: bool = False  # UEFI only: the secure-boot OVMF build (needs q35: SMM)

    @property
    def boot_disk(self) -> Disk | None:
        return next((d for d in self.disks if d.boot), None)


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class PortRange(Value):
    """An inclusive range of TCP ports (a node's migration listeners)."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class SshSpec(Value):
    """How a remote node is reached over OpenSSH. Host keys are always verified; keys only."""

    host: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None  # None: the default keys in ~/.ssh
    known_hosts_file: str | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0  # seconds, for the TCP connection, key exchange and authentication
    agent_command: tuple[str, ...] = ("reconciler", "agent")  # how the host starts its agent
    persist: float = 60.0  # seconds a link keeper holds the connection after the last run; 0: none


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class NodeSpec(Value):
    """A host that runs instances. Several may share one machine (distinct state directories)."""

    name: str
    state_dir: str
    address: str = "127.0.0.1"  # where migration streams go
    accelerator: Accelerator = Accelerator.KVM
    qemu_binary: str = "qemu-system-x86_64"
    migration_ports: PortRange = field(default_factory=lambda: PortRange(49152, 49215))
    memory_mib: int | None = None  # memory instances may use; None = the host's total
    labels: tuple[tuple[str, str], ...] = ()
    ssh: SshSpec | None = None  # None: a node on this machine

    @property
    def machine(self) -> str:
        """The machine the node's state directory is on: "local", or the SSH endpoint."""
        return "local" if self.ssh is None else f"{self.ssh.host}:{self.ssh.port}"


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class SourceRef(Value):
    """Where a document came from, for error messages."""

    path: str
    line: int = 0  # 1-based; 0 when unknown
    column: int = 0

    def __str__(self) -> str:
        """`file:line:column`, as validate's problems begin (just the file when the line is unknown)."""
        return f"{self.path}:{self.line}:{self.column}" if self.line else self.path


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class FieldRef(Value):
    """A field of a declared object, in the manifest's spelling: ("Instance", "web1", ("spec", "kernel",
    "path")). Where it is declared (the object's document, or the Defaults one) is found on demand."""

    kind: Kind
    name: str
    path: tuple[str | int, ...]


@dataclass(frozen=True, slots=True, repr=False)  # repr: Value's (==, hash: compiled, for speed)
class DesiredState(Value):
    """Everything the manifests declare, validated and normalized."""

    instances: Mapping[str, InstanceSpec]
    nodes: Mapping[str, NodeSpec]
    prune: bool = False
    sources: Mapping[str, SourceRef] = field(default_factory=dict)  # "Kind/name" -> where declared
    # spec_hash() of instances, where known: the watch daemon keeps them (each computed once, when its
    # file changes) so a replan compares digests with the applied records instead of whole specs.
    spec_hashes: Mapping[str, str] = field(default_factory=dict, compare=False)  # derived: not compared


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for a model value: dataclasses become dicts keyed by field name."""
    names = _FIELD_NAMES.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: to_jsonable(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per dataclass: its fields' names, in order


def spec_hash(spec: InstanceSpec) -> str:
    """A stable digest of the normalized spec (the 'essence' the applied record keeps)."""
    import json

    from reconciler import digest

    blob = json.dumps(to_jsonable(spec), sort_keys=True, separators=(",", ":"))
    return digest.sha256_hex(blob.encode())
