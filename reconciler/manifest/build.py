"""Schema-valid document bodies -> model objects (InstanceSpec, NodeSpec), normalized.

This is where camelCase YAML becomes the model's snake_case fields, sizes and durations become numbers,
Defaults are merged under each instance, and the rules that concern one object alone are checked
(boot disk, NIC modes, kernel paths, addresses, ranges). Every value the argv builder would refuse
(reconciler/qemuopts.py) is refused here, at its manifest field, so `validate` catches what a start
would: control characters in paths and kernel text, an ide disk with readOnly, an interface name QEMU
cannot use, an IPv6 zone in an address. Pure: no I/O, no file system access.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from reconciler import model, units
from reconciler.manifest.problems import show
from reconciler.values import Value

FieldPath = tuple[str | int, ...]
T = TypeVar("T")

MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB
MAX_SHUTDOWN_TIMEOUT = 86400.0
MAX_DOWNTIME_MS = 3_600_000
DEFAULT_SHUTDOWN_TIMEOUT = model.InstanceSpec(name="", memory_mib=1).shutdown_timeout
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_DNS_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")  # as qemuopts refuses them


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Issue(Value):
    """A rule broken by one object; `path` is a field path into its document (('spec', 'memory'))."""

    path: FieldPath
    message: str


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`: mappings merge recursively, lists and scalars are replaced, and a
    null in `override` removes the key (`kernel: null` unsets the Defaults' kernel). The result holds no
    null in any mapping it merged; list items are data and stay as they are."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif type(value) is dict:  # plain YAML data: no ABC checks (hot path)
            below = merged.get(key)
            merged[key] = deep_merge(below if type(below) is dict else {}, value)
        else:
            merged[key] = value
    return merged


def merged_spec(defaults: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """An instance's spec with the Defaults' spec (without `prune`, its nulls already removed by
    `clean_defaults`) under it and every null removed: what `build_instance` takes."""
    if defaults:
        return deep_merge(defaults, spec)
    if _has_null(spec):
        return deep_merge({}, spec)
    return spec  # the common case without Defaults: no copy


def clean_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Defaults document's spec as instances inherit it: without `prune` and without nulls."""
    return deep_merge({}, {k: v for k, v in spec.items() if k != "prune"})


def _has_null(spec: Mapping[str, Any]) -> bool:
    return any(v is None or (type(v) is dict and _has_null(v)) for v in spec.values())


# Most values repeat across a tree's instances ("512M", "300ms", the same migration settings): the
# pure conversions below are remembered by value (its type too: 1, 1.0 and true differ), bounded.
_MAX_MEMO = 4096
_converted: dict[tuple[Any, type, Any], tuple[bool, Any]] = {}  # (parse, type, value) -> (ok, result)
_migrations: dict[tuple[Any, ...], tuple[model.Migration, tuple[Issue, ...]]] = {}
E = TypeVar("E", bound=enum.Enum)


def _enum(cls: type[E], value: Any) -> E:
    """cls(value), without Enum.__call__'s cost for a valid value (the schema has checked it)."""
    try:
        member = cls._value2member_map_.get(value)
    except TypeError:
        member = None
    return member if member is not None else cls(value)  # type: ignore[return-value]


class _Builder:
    """Collects issues while converting; `get` returns a fallback when a conversion fails."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, path: FieldPath, message: str) -> None:
        self.issues.append(Issue(path, message))

    def convert(self, path: FieldPath, value: Any, parse: Callable[[Any], T], fallback: T) -> T:
        try:
            known = _converted.get((parse, type(value), value))
        except TypeError:  # unhashable: not a value any unit takes, and never memoized
            known = None
        if known is None:
            try:
                known = (True, parse(value))
            except (ValueError, OverflowError) as err:
                known = (False, str(err))
            with contextlib.suppress(TypeError):
                if len(_converted) >= _MAX_MEMO:
                    _converted.clear()
                _converted[(parse, type(value), value)] = known
        ok, result = known
        if ok:
            return cast(T, result)
        self.fail(path, str(result))
        return fallback

    def in_range(self, path: FieldPath, value: float, low: float, high: float, unit: str = "") -> None:
        if not low <= value <= high:
            self.fail(path, f"{_num(value)}{unit} is out of range ({_num(low)}{unit} to {_num(high)}{unit})")

    def plain_text(self, path: FieldPath, value: str, what: str) -> bool:
        """No control characters (a NUL cannot be passed to QEMU at all; a newline is a mistake)."""
        found = _CONTROL_RE.search(value)
        if found is None:
            return True
        character = "a NUL character" if found.group() == "\0" else f"the control character {found.group()!r}"
        self.fail(path, f"{what} contains {character}")
        return False

    def absolute(self, path: FieldPath, value: str, what: str) -> None:
        # os.path.isabs of a str on POSIX is exactly startswith("/"), at a tenth of the cost
        if self.plain_text(path, value, what) and not (
            value.startswith("/") if type(value) is str else os.path.isabs(value)
        ):
            self.fail(path, f"{what} {show(value)} must be an absolute path")

    def ip(self, path: FieldPath, value: str) -> None:
        if type(value) is str and is_dotted_ipv4(value):
            return  # every node has an address (default 127.0.0.1): no ipaddress import (1 ms) for these
        import ipaddress

        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            self.fail(path, f"{show(value)} is not a valid IP address")
            return
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            self.fail(path, f"{show(value)}: an IPv6 zone (%...) cannot be passed to QEMU")


def is_dotted_ipv4(value: str) -> bool:
    """Whether `value` is an IPv4 address in dotted decimal, by ipaddress.IPv4Address's rules (four
    decimal octets of at most three ASCII digits, at most 255, no leading zero)."""
    parts = value.split(".")
    return len(parts) == 4 and all(
        0 < len(p) <= 3 and p.isascii() and p.isdigit() and (p[0] != "0" or p == "0") and int(p) <= 255
        for p in parts
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def labels_of(metadata: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((metadata.get("labels") or {}).items()))


def check_name(name: object) -> Issue | None:
    """The name becomes a file name: re-check it strictly (the schema's `$` allows a trailing newline)."""
    if isinstance(name, str) and _DNS_RE.fullmatch(name) and len(name) <= 63:
        return None
    return Issue(("metadata", "name"), f"{show(name)} is not a DNS label")


def needs_kvm(spec: model.InstanceSpec) -> bool:
    """cpuModel host (with or without features: `host,+vmx`) runs only under KVM."""
    return spec.cpu_model is not None and spec.cpu_model.split(",", 1)[0] == "host"


def build_instance(
    name: str, labels: tuple[tuple[str, str], ...], spec: Mapping[str, Any], partial: bool = False
) -> tuple[model.InstanceSpec | None, list[Issue]]:
    """An InstanceSpec from a merged, schema-valid spec; None with issues when a rule is broken.
    `partial`: return the object even then (fallback values), so cross-object rules can still run."""
    b = _Builder()
    if "memory" not in spec:
        b.fail(("spec", "memory"), "required field is missing (here or in Defaults)")
        memory = 0
    else:
        memory = b.convert(("spec", "memory"), spec["memory"], units.parse_size_mib, -1)
        if memory >= 0:
            b.in_range(("spec", "memory"), memory, MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB")
    max_memory, max_vcpus = _hotplug_room(b, spec, memory)
    kernel = _kernel(b, spec.get("kernel"))
    disks = _disks(b, spec.get("disks") or [], has_kernel="kernel" in spec)
    nics = tuple(_nic(b, ("spec", "nics", i), n) for i, n in enumerate(spec.get("nics") or []))
    vnc = _vnc(b, spec["vnc"]) if "vnc" in spec else None
    shutdown = DEFAULT_SHUTDOWN_TIMEOUT
    if "shutdownTimeout" in spec:
        shutdown = b.convert(
            ("spec", "shutdownTimeout"), spec["shutdownTimeout"], units.parse_duration, shutdown
        )
        b.in_range(("spec", "shutdownTimeout"), shutdown, 0, MAX_SHUTDOWN_TIMEOUT, "s")
    extra = tuple(spec.get("qemuExtraArgs") or ())
    for i, arg in enumerate(extra):
        if "\0" in arg:
            b.fail(("spec", "qemuExtraArgs", i), "contains a NUL character")
    migration = _migration(b, spec.get("migration") or {})
    cloud_init = _cloud_init(b, spec["cloudInit"]) if "cloudInit" in spec else None
    if cloud_init is not None and sum(1 for d in disks if d.bus is model.DiskBus.IDE) > 3:
        b.fail(("spec", "cloudInit"), "the seed CD-ROM takes an ide slot: at most 3 disks can use the ide "
                                      "bus with cloudInit")
    if spec.get("secureBoot") and spec.get("firmware", "bios") != "uefi":
        b.fail(("spec", "secureBoot"), "secure boot needs firmware uefi")
    if spec.get("secureBoot") and not str(spec.get("machine", "pc")).startswith(("q35", "pc-q35")):
        b.fail(("spec", "secureBoot"), "secure boot needs SMM: use machine q35")
    if b.issues and not partial:
        return None, b.issues
    instance = model.InstanceSpec(
        name=name,
        memory_mib=memory,
        vcpus=spec.get("vcpus", 1),
        max_memory_mib=max_memory,
        max_vcpus=max_vcpus,
        node=spec.get("node"),
        labels=labels,
        run_strategy=_enum(model.RunStrategy, spec.get("runStrategy", "Always")),
        protect=spec.get("protect", False),
        update_policy=_enum(model.UpdatePolicy, spec.get("updatePolicy", "Immediate")),
        disks=disks,
        kernel=kernel,
        acpi=spec.get("acpi", True),
        serial_console=spec.get("serialConsole", True),
        vnc=vnc,
        nics=nics,
        machine=spec.get("machine", "pc"),
        cpu_model=spec.get("cpuModel"),
        shutdown_timeout=float(shutdown),
        migration=migration,
        extra_args=extra,
        cloud_init=cloud_init,
        guest_agent=spec.get("guestAgent", False),
        firmware=_enum(model.Firmware, spec.get("firmware", "bios")),
        secure_boot=spec.get("secureBoot", False),
    )
    return instance, b.issues


def _hotplug_room(b: _Builder, spec: Mapping[str, Any], memory: int) -> tuple[int | None, int | None]:
    """maxMemory and maxVcpus (None when not given: the boot values, no hotplug). The boot values must fit
    under them: a manifest asking for more than its maximum is refused here, at `memory` / `vcpus`."""
    max_memory = None
    if "maxMemory" in spec:
        max_memory = b.convert(("spec", "maxMemory"), spec["maxMemory"], units.parse_size_mib, -1)
        if max_memory >= 0:
            b.in_range(("spec", "maxMemory"), max_memory, MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB")
        if max_memory < 0:
            max_memory = None
        elif memory > max_memory:
            b.fail(("spec", "memory"), f"{memory} MiB is above maxMemory ({max_memory} MiB)")
    max_vcpus = spec.get("maxVcpus")
    vcpus = spec.get("vcpus", 1)
    if max_vcpus is not None and vcpus > max_vcpus:
        b.fail(("spec", "vcpus"), f"{vcpus} is above maxVcpus ({max_vcpus})")
    return max_memory, max_vcpus


def _kernel(b: _Builder, raw: Mapping[str, Any] | None) -> model.KernelBoot | None:
    if raw is None:
        return None
    at: FieldPath = ("spec", "kernel")
    path, root, initrd = raw.get("path"), raw.get("root"), raw.get("initrd")
    if path is None:
        b.fail((*at, "path"), "a kernel needs a path")
    else:
        b.absolute((*at, "path"), path, "kernel path")
    if initrd is not None:
        b.absolute((*at, "initrd"), initrd, "initrd path")
    if root is None:
        b.fail((*at, "root"), "a root device is required with a kernel")
    else:
        b.plain_text((*at, "root"), root, "the root device")
    if raw.get("cmdline"):
        b.plain_text((*at, "cmdline"), raw["cmdline"], "the kernel command line")
    return model.KernelBoot(kernel=path or "", root=root or "", initrd=initrd, cmdline=raw.get("cmdline", ""))


_SEED_PARTS = (("userData", "user_data"), ("metaData", "meta_data"), ("networkConfig", "network_config"))


def _cloud_init(b: _Builder, raw: Mapping[str, Any]) -> model.CloudInit:
    """The seed's parts: inline text, or a file relative to the manifest's directory (read by the loader,
    manifest.seedfiles); a file must stay inside that directory."""
    at: FieldPath = ("spec", "cloudInit")
    values: dict[str, str] = {}
    for key, attribute in _SEED_PARTS:
        text, path = raw.get(key), raw.get(f"{key}File")
        if text is not None and path is not None:
            b.fail((*at, f"{key}File"), f"give {key} or {key}File, not both")
        if text is not None:
            values[attribute] = text
        if path is not None and _inside(b, (*at, f"{key}File"), path, f"{key}File"):
            values[f"{attribute}_file"] = path
    return model.CloudInit(**values)


def _inside(b: _Builder, at: FieldPath, path: str, what: str) -> bool:
    """A relative path that cannot leave the directory it is relative to (symlinks: checked on reading)."""
    if not b.plain_text(at, path, what):
        return False
    if os.path.isabs(path) or os.path.normpath(path).split(os.sep)[0] == "..":
        b.fail(at, f"{what} {show(path)} must stay inside the manifest's directory (a relative path, "
                   "without ..)")
        return False
    return True


def _vnc(b: _Builder, raw: Mapping[str, Any]) -> model.Vnc:
    at: FieldPath = ("spec", "vnc")
    bind = raw.get("bind", "127.0.0.1")
    b.ip((*at, "bind"), bind)
    password = raw.get("passwordFile")
    if password is not None:
        b.absolute((*at, "passwordFile"), password, "passwordFile")
    tls = None
    if raw.get("tls") is not None:
        tls = model.VncTls(x509_dir=raw["tls"]["x509Dir"])
        b.absolute((*at, "tls", "x509Dir"), tls.x509_dir, "x509Dir")
    return model.Vnc(bind=bind, display=raw.get("display", 0), password_file=password, tls=tls)


def _disks(b: _Builder, raw: list[Mapping[str, Any]], has_kernel: bool) -> tuple[model.Disk, ...]:
    booting = [i for i, d in enumerate(raw) if d.get("boot")]
    for i in booting[1:]:
        b.fail(("spec", "disks", i, "boot"), f"only one disk may boot (disks[{booting[0]}] already does)")
    if has_kernel:
        for i in booting[:1]:
            b.fail(
                ("spec", "disks", i, "boot"), "a disk cannot boot when a kernel is given (direct kernel boot)"
            )
    boot_index = None if has_kernel or not raw else (booting[0] if booting else 0)
    disks = []
    for i, d in enumerate(raw):
        b.absolute(("spec", "disks", i, "path"), d["path"], "disk path")
        base, size = d.get("baseImage"), _disk_size(b, i, d)
        default_format = "qcow2" if base is not None else "raw"
        disks.append(
            model.Disk(
                path=d["path"],
                format=_enum(model.DiskFormat, d.get("format", default_format)),
                bus=_enum(model.DiskBus, d.get("bus", "virtio")),
                read_only=d.get("readOnly", False),
                cache=_enum(model.CacheMode, d.get("cache", "none")),
                boot=i == boot_index,
                size=size,
                base_image=base,
                delete_policy=_enum(model.DeletePolicy, d.get("deletePolicy", "Retain")),
            )
        )
        _provisioned(b, i, disks[-1])
    ide = [i for i, d in enumerate(disks) if d.bus is model.DiskBus.IDE]
    for i in ide:
        if disks[i].read_only:
            b.fail(("spec", "disks", i, "readOnly"),
                   "the ide bus cannot attach read-only disks; use virtio or scsi")
    if len(ide) > 4:
        b.fail(("spec", "disks", ide[4], "bus"), "at most 4 disks can use the ide bus")
    return tuple(disks)


SECTOR = 512


def _disk_size(b: _Builder, i: int, d: Mapping[str, Any]) -> int | None:
    if "size" not in d:
        return None
    at: FieldPath = ("spec", "disks", i, "size")
    size = b.convert(at, d["size"], units.parse_bytes, -1)
    if size == 0:
        b.fail(at, f"{show(d['size'])} is not a size above zero")
    elif size > 0 and size % SECTOR:
        b.fail(at, f"{show(d['size'])} is not a whole number of 512-byte sectors")
    return max(size, 0) or None


def _provisioned(b: _Builder, i: int, disk: model.Disk) -> None:
    """A disk the reconciler creates when missing: a file it can make with qemu-img, from a usable base."""
    at: FieldPath = ("spec", "disks", i)
    if not disk.provisioned:
        if disk.delete_policy is model.DeletePolicy.DELETE:
            b.fail((*at, "deletePolicy"), "deletePolicy applies to disks the reconciler creates (size or "
                                          "baseImage)")
        return
    if disk.path.startswith("/dev/"):
        b.fail((*at, "path"), f"disk path {show(disk.path)} is a device; only image files can be created "
                              "(size, baseImage)")
    if disk.base_image is None:
        return
    b.absolute((*at, "baseImage"), disk.base_image, "baseImage")
    if disk.format is not model.DiskFormat.QCOW2:
        b.fail((*at, "format"), "a disk made from a baseImage is a qcow2 overlay; format must be qcow2")
    if os.path.normpath(disk.base_image) == os.path.normpath(disk.path):
        b.fail((*at, "baseImage"), "the base image cannot be the disk itself")


def _nic(b: _Builder, at: FieldPath, raw: Mapping[str, Any]) -> model.Nic:
    mac = str(raw["mac"])
    if not _MAC_RE.fullmatch(mac):
        b.fail((*at, "mac"), f"{show(mac)} is not a MAC address like 52:54:00:12:34:56")
    elif int(mac[:2], 16) & 1:
        b.fail((*at, "mac"), f"{show(mac)} is a multicast address (the first octet must be even)")
    mode = _enum(model.NicMode, raw.get("mode", "bridge"))
    bridge = raw.get("bridge")
    if mode is model.NicMode.BRIDGE and bridge is None:
        b.fail((*at, "bridge"), "mode bridge needs a bridge")
    if mode is model.NicMode.USER and bridge is not None:
        b.fail((*at, "bridge"), "mode user cannot have a bridge")
    if bridge in (".", ".."):
        b.fail((*at, "bridge"), f"{show(bridge)} is not a network interface name")
    if mode is model.NicMode.USER and raw.get("hook") is not None:
        b.fail((*at, "hook"), "a hook is only used in mode bridge")
    if raw.get("hook") is not None:
        b.absolute((*at, "hook"), raw["hook"], "hook")
    if raw.get("ip") is not None:
        b.ip((*at, "ip"), raw["ip"])
    return model.Nic(
        mac=mac.lower(),
        model=_enum(model.NicModel, raw.get("model", "virtio")),
        mode=mode,
        bridge=bridge,
        ip=raw.get("ip"),
        hook=raw.get("hook"),
    )


_DEFAULT_MIGRATION = model.Migration()


def _migration(b: _Builder, raw: Mapping[str, Any]) -> model.Migration:
    if not raw:
        return _DEFAULT_MIGRATION
    key = tuple((k, type(v), v) for k, v in raw.items())
    try:
        known = _migrations.get(key)
    except TypeError:  # an unhashable value: built each time
        return _build_migration(b, raw)
    if known is None:
        issues = len(b.issues)
        known = (_build_migration(b, raw), tuple(b.issues[issues:]))
        if len(_migrations) >= _MAX_MEMO:
            _migrations.clear()
        _migrations[key] = known
    else:
        b.issues += known[1]
    return known[0]


def _build_migration(b: _Builder, raw: Mapping[str, Any]) -> model.Migration:
    at: FieldPath = ("spec", "migration")
    default = _DEFAULT_MIGRATION
    bandwidth = b.convert((*at, "maxBandwidth"), raw.get("maxBandwidth", 0), units.parse_bytes, 0)
    downtime = b.convert(
        (*at, "maxDowntime"),
        raw.get("maxDowntime", default.max_downtime_ms),
        units.parse_duration_ms,
        default.max_downtime_ms,
    )
    b.in_range((*at, "maxDowntime"), downtime, 1, MAX_DOWNTIME_MS, "ms")
    per_gib = b.convert(
        (*at, "completionTimeoutPerGiB"),
        raw.get("completionTimeoutPerGiB", default.completion_timeout_per_gib),
        units.parse_duration,
        default.completion_timeout_per_gib,
    )
    progress = b.convert(
        (*at, "progressTimeout"),
        raw.get("progressTimeout", default.progress_timeout),
        units.parse_duration,
        default.progress_timeout,
    )
    for field, value in (("completionTimeoutPerGiB", per_gib), ("progressTimeout", progress)):
        b.in_range((*at, field), value, 0.001, 86400, "s")
    return model.Migration(
        mode=_enum(model.MigrationMode, raw.get("mode", "live")),
        max_bandwidth=bandwidth,
        max_downtime_ms=downtime,
        completion_timeout_per_gib=per_gib,
        progress_timeout=progress,
        auto_converge=raw.get("autoConverge", False),
        post_copy=raw.get("postCopy", False),
    )


def resolve_state_dir(manifest_path: str, state_dir: str) -> str:
    """A relative stateDir is relative to the declaring file's directory (pure join; '~' stays as is)."""
    if os.path.isabs(state_dir):
        return os.path.normpath(state_dir)
    base = os.path.dirname(os.path.abspath(manifest_path))
    return os.path.normpath(os.path.join(base, state_dir))


def build_node(
    name: str, labels: tuple[tuple[str, str], ...], spec: Mapping[str, Any], manifest_path: str
) -> tuple[model.NodeSpec | None, list[Issue]]:
    b = _Builder()
    address = spec.get("address", "127.0.0.1")
    b.ip(("spec", "address"), address)
    state_dir = spec["stateDir"]
    b.plain_text(("spec", "stateDir"), state_dir, "stateDir")
    if "qemuBinary" in spec:
        b.plain_text(("spec", "qemuBinary"), spec["qemuBinary"], "qemuBinary")
    memory = None
    if "memory" in spec:
        memory = b.convert(("spec", "memory"), spec["memory"], units.parse_size_mib, -1)
        if memory >= 0:
            b.in_range(("spec", "memory"), memory, MIN_MEMORY_MIB, MAX_MEMORY_MIB * 16, " MiB")
    ports = model.PortRange(49152, 49215)
    if "migrationPorts" in spec:
        ports = model.PortRange(spec["migrationPorts"]["first"], spec["migrationPorts"]["last"])
        if ports.first > ports.last:
            b.fail(("spec", "migrationPorts", "last"), f"last ({ports.last}) is below first ({ports.first})")
    ssh = _ssh(b, spec.get("ssh"), address)
    if ssh is not None and not os.path.isabs(state_dir):
        b.fail(("spec", "stateDir"), f"stateDir {show(state_dir)} of a remote node must be an absolute path "
                                     "on that host")
    if b.issues:
        return None, b.issues
    return model.NodeSpec(
        name=name,
        state_dir=resolve_state_dir(manifest_path, state_dir),
        address=address,
        accelerator=_enum(model.Accelerator, spec.get("accelerator", "kvm")),
        qemu_binary=spec.get("qemuBinary", "qemu-system-x86_64"),
        migration_ports=ports,
        memory_mib=memory,
        labels=labels,
        ssh=ssh,
    ), []


def _ssh(b: _Builder, raw: Mapping[str, Any] | None, address: str) -> model.SshSpec | None:
    if raw is None:
        return None
    at: FieldPath = ("spec", "ssh")
    for key, what in (("identityFile", "identityFile"), ("knownHostsFile", "knownHostsFile")):
        if key in raw:
            b.absolute((*at, key), raw[key], what)
    timeout = 10.0
    if "connectTimeout" in raw:
        timeout = b.convert((*at, "connectTimeout"), raw["connectTimeout"], units.parse_duration, timeout)
        b.in_range((*at, "connectTimeout"), timeout, 0.1, 600, "s")
    persist = 60.0
    if "persist" in raw:
        persist = b.convert((*at, "persist"), raw["persist"], units.parse_duration, persist)
        b.in_range((*at, "persist"), persist, 0, 24 * 3600, "s")
    return model.SshSpec(
        host=raw.get("host", address),
        port=raw.get("port", 22),
        user=raw.get("user", "root"),
        identity_file=raw.get("identityFile"),
        known_hosts_file=raw.get("knownHostsFile"),
        connect_timeout=float(timeout),
        agent_command=tuple(raw.get("agentCommand", ("reconciler", "agent"))),
        persist=float(persist),
    )
