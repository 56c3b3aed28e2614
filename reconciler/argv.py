"""The QEMU command line of an instance, as data.

`build_launch(spec, node)` is a pure function from the declared spec to everything a start needs: the argv
tuple, the instance's paths, the environment for the bridge hook and the per-NIC files to write first.
`build_argv` returns just the argv. Golden tests pin the exact output; `reconciler showcmd` prints it.

Decisions (each differs from, or fixes, the seed's hv_kvm):
- `-nodefaults -no-user-config`: only the devices we list exist, whatever the host's QEMU config says.
- Two QMP sockets (`-chardev socket` + `-mon mode=control`): QEMU serves one client per socket, so the
  executor's commands and a watcher's event stream do not contend. The seed's human monitor is gone.
- `-no-shutdown`: a guest power-off leaves QEMU alive in status `shutdown` instead of exiting. With
  `-daemonize` nobody can reap QEMU's exit status, so an exited process cannot tell a guest power-off from
  a crash; a lingering process can (query-status, the SHUTDOWN event's `guest` flag). The reconciler then
  applies the run strategy: restart in place (`system_reset` + `cont`, same process and taps) or `quit`.
  The cost: a powered-off guest holds its memory until the reconciler looks; `watch` looks at once.
- `-daemonize`: the foreground process exits only after QEMU initialised (or failed, with the error on
  stderr), which is the start's verdict; the pidfile names the daemon.
- Disks use `-blockdev` (file node + format node) and `-device`: no filename probing (a path with `:` is
  never a protocol), explicit cache flags, named nodes for later QMP work. Paths under /dev/ use the
  `host_device` driver. The boot disk gets `bootindex=0`. SCSI disks share one virtio-scsi controller.
  IDE cannot do read-only disks (QEMU's ide-hd refuses them): rejected here rather than at start.
- No ACPI is `-machine ...,acpi=off` (`-no-acpi` is deprecated after 7.2).
- Headless is `-display none` + `-vga none`; never `-nographic` (it grabs stdio). VNC adds `-vga std`, a USB
  tablet (absolute pointer, as the seed had) and `-vnc <spec's bind>:<display>` (the seed used the name
  of its bind-address constant instead of its value). A password file adds `password=on` only: the
  password itself is set over QMP after the start (argv is world-readable in /proc). TLS adds an
  `-object tls-creds-x509` (server endpoint) and `tls-creds=` on the display.
- Serial console on a unix socket, `server=on,wait=off`, with `console=ttyS0,115200` on the kernel command
  line (the seed used 38400), and optionally a log file of the current process's serial output.
- Tap NICs run ONE fixed hook (reconciler/hooks/ifup.py) instead of a generated script per start; its
  contract is in that module. Interface names are ours: `rc<8 hex>n<index>` from the node's state dir
  and the instance name, unique per host and within IFNAMSIZ.
- Every value goes through qemuopts (commas doubled); what cannot be expressed raises ArgvError.
- A cloud-init seed (cloudInit) is an `ide-cd` of the ISO at `seed.iso` in the instance's directory,
  read-only; the executor's node writes the ISO (0600) right before the launch (Launch.seed).
- `firmware: uefi` maps OVMF's code read-only and the instance's own `nvram.fd` (copied from OVMF's
  template at the first start, kept across restarts) as the machine's pflash0/pflash1, by -blockdev
  node names; `secureBoot` uses the secure-boot build, `smm=on` and a secure pflash.
- `guestAgent` adds a `virtio-serial-pci` with qemu-guest-agent's port on `agent.sock` in the instance's
  directory (QEMU serves it; made 0600 after the launch).
- Live changes (reconciler.hotplug): `maxMemory` adds a virtio-balloon device (id balloon0), and above
  `memory` also `-m SIZE,slots=8,maxmem=MAX`; `maxVcpus` above `vcpus` is `-smp N,maxcpus=MAX`. A
  migration target gets the DIMMs and CPUs hotplugged into its source as boot devices (same ids), and
  the disks and NICs added live (reconciler.devplug) at their slots (`addr=`), after extra_args.
- `extra_args`, the escape hatch, comes last, verbatim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reconciler import devplug, digest, hotplug
from reconciler import qemuopts as q
from reconciler.errors import ArgvError
from reconciler.firmware import ovmf_of
from reconciler.hooks import ifup
from reconciler.layout import (
    InstancePaths,
    InvalidInstanceName,
    SocketPathTooLong,
    check_socket_path,
    check_sockets,
    instance_paths,
)
from reconciler.model import (
    Accelerator,
    Disk,
    DiskBus,
    InstanceSpec,
    Nic,
    NicMode,
    NicModel,
    NodeSpec,
)
from reconciler.provision.seed import SeedSpec, seed_spec
from reconciler.values import Value

DEFAULT_IFUP = os.path.join(os.path.dirname(os.path.abspath(ifup.__file__)), "ifup.py")
SERIAL_BAUD = 115200
VNC_TLS_ID = "vnc-tls0"

NIC_DEVICE = {NicModel.VIRTIO: "virtio-net-pci", NicModel.E1000: "e1000", NicModel.RTL8139: "rtl8139"}
_DISK_DEVICE = {DiskBus.VIRTIO: "virtio-blk-pci", DiskBus.SCSI: "scsi-hd", DiskBus.IDE: "ide-hd"}
# cache mode -> (cache.direct, cache.no-flush, device write-cache), as QEMU's -drive cache= maps them
_CACHE = devplug.CACHE_FLAGS


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class IncomingSpec(Value):
    """Start as a migration target. address None means `-incoming defer` (URI given later over QMP)."""

    address: str | None = None
    port: int = 0


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class NicFile(Value):
    """A file the executor writes before starting QEMU, for the bridge hook."""

    path: str
    config: ifup.NicHookConfig

    @property
    def text(self) -> str:
        return self.config.to_json()


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Launch(Value):
    """Everything one QEMU start needs: its argv, its paths and what to write before it."""

    argv: tuple[str, ...]
    paths: InstancePaths
    env: tuple[tuple[str, str], ...] = ()  # added to the inherited environment when starting QEMU
    nic_files: tuple[NicFile, ...] = ()  # write these (and create paths.dir) before starting
    seed: SeedSpec | None = None  # write its NoCloud ISO at paths.seed (0600) before starting
    nvram_template: str | None = None  # firmware uefi: copy it to paths.nvram first, if that is missing


def tap_ifname(node: NodeSpec, instance: str, index: int) -> str:
    """Our tap interface name: host-unique across nodes sharing a machine, at most 15 bytes."""
    short = digest.sha256_hex(f"{node.state_dir}\0{instance}".encode())[:8]
    return f"rc{short}n{index}"


def build_argv(spec: InstanceSpec, node: NodeSpec, *,
               incoming: IncomingSpec | None = None) -> tuple[str, ...]:
    return build_launch(spec, node, incoming=incoming).argv


_NOTHING_PLUGGED = hotplug.Plugged()


def build_launch(
    spec: InstanceSpec,
    node: NodeSpec,
    *,
    incoming: IncomingSpec | None = None,
    daemonize: bool = True,
    serial_log: bool = True,
    ifup_path: str = DEFAULT_IFUP,
    plugged: hotplug.Plugged = _NOTHING_PLUGGED,
) -> Launch:
    """Everything needed to start `spec` on `node`; raises ArgvError for what QEMU cannot be told safely.
    `plugged`: devices hotplugged into the QEMU this one replaces (a migration target), added at boot."""
    try:
        return _build(spec, node, incoming, daemonize, serial_log, ifup_path, plugged)
    except q.BadValue as err:
        raise ArgvError(spec.name, err.field, err.detail) from None
    except InvalidInstanceName as err:
        raise ArgvError(spec.name, "name", err.detail) from None
    except SocketPathTooLong as err:
        raise ArgvError(spec.name, "node.state_dir", err.message) from None


def _build(spec: InstanceSpec, node: NodeSpec, incoming: IncomingSpec | None, daemonize: bool,
           serial_log: bool, ifup_path: str, plugged: hotplug.Plugged) -> Launch:
    q.path("node.state_dir", node.state_dir)
    paths = check_sockets(instance_paths(node, spec.name))
    argv: list[str] = [q.text("node.qemu_binary", node.qemu_binary)]
    argv += ["-name", q.join(None, [("guest", spec.name)]), "-nodefaults", "-no-user-config"]
    ovmf = ovmf_of(spec)
    argv += _machine(spec, node, ovmf is not None)
    argv += _firmware(spec, paths)
    argv += _sizes(spec)
    argv += ["-pidfile", paths.pidfile]
    if daemonize:
        argv.append("-daemonize")
    argv.append("-no-shutdown")
    argv += _qmp("qmp", paths.qmp) + _qmp("qmp-watch", paths.qmp_watch)
    argv += _serial(spec, paths, serial_log)
    argv += _display(spec)
    argv += _kernel(spec)
    argv += _disks(spec)
    argv += _seed(spec, paths)
    argv += _agent(spec, paths)
    nic_argv, nic_files = _nics(spec, node, paths, q.path("ifup", ifup_path))
    argv += nic_argv
    argv += _live_devices(spec, plugged)
    if incoming is not None:
        argv += ["-incoming", _incoming_uri(incoming)]
    for i, arg in enumerate(spec.extra_args):
        if "\0" in arg:
            raise q.BadValue(f"extra_args[{i}]", "contains a NUL character")
    argv += spec.extra_args
    live_argv, live_files = _live_pci(spec, node, paths, plugged, q.path("ifup", ifup_path))
    argv += live_argv
    nic_files += live_files
    # Also without taps at boot on a machine that hotplugs: a tap added live runs the hook with QEMU's env.
    hook_env = nic_files or devplug.hotplug_machine(spec.machine)
    env = ((ifup.ENV_INSTANCE_DIR, paths.dir),) if hook_env else ()
    seed = seed_spec(spec.cloud_init) if spec.cloud_init is not None else None
    return Launch(argv=tuple(argv), paths=paths, env=env, nic_files=nic_files, seed=seed,
                  nvram_template=ovmf.vars_template if ovmf is not None else None)


def _machine(spec: InstanceSpec, node: NodeSpec, uefi: bool = False) -> list[str]:
    opts = [("accel", node.accelerator.value)]
    if not spec.acpi:
        opts.append(("acpi", "off"))
    if uefi:
        opts += [("pflash0", "fw-code"), ("pflash1", "fw-vars")]
    if spec.secure_boot:
        opts.append(("smm", "on"))
    out = ["-machine", q.join(q.token("machine", spec.machine), opts)]
    if spec.cpu_model is not None:
        model = q.text("cpu_model", spec.cpu_model)
        if node.accelerator is Accelerator.TCG and model.split(",", 1)[0] == "host":
            raise q.BadValue("cpu_model", f"'host' needs KVM; node {node.name} uses TCG (try 'max')")
        out += ["-cpu", model]  # verbatim: QEMU's -cpu syntax is model[,feature...]
    return out


def _firmware(spec: InstanceSpec, paths: InstancePaths) -> list[str]:
    """OVMF's code (read-only, shared) and the instance's own variable store, as the machine's pflash."""
    ovmf = ovmf_of(spec)
    if ovmf is None:
        return []
    code = q.join(None, [("driver", "file"), ("node-name", "fw-code-file"), ("filename", ovmf.code),
                         ("read-only", "on")])
    nvram = q.join(None, [("driver", "file"), ("node-name", "fw-vars-file"),
                          ("filename", q.path("firmware", paths.nvram))])
    out = ["-blockdev", code, "-blockdev", "driver=raw,node-name=fw-code,file=fw-code-file,read-only=on",
           "-blockdev", nvram, "-blockdev", "driver=raw,node-name=fw-vars,file=fw-vars-file"]
    if spec.secure_boot:
        out += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return out


def _sizes(spec: InstanceSpec) -> list[str]:
    if spec.memory_mib < 1:
        raise q.BadValue("memory", f"must be at least 1 MiB, not {spec.memory_mib}")
    if spec.vcpus < 1:
        raise q.BadValue("vcpus", f"must be at least 1, not {spec.vcpus}")
    memory, smp = str(spec.memory_mib), str(spec.vcpus)
    room = hotplug.memory_room(spec)
    if room < 0:
        raise q.BadValue("memory", f"{spec.memory_mib} MiB is above maxMemory ({spec.max_memory_mib} MiB)")
    if room:
        memory = f"{spec.memory_mib}M,slots={hotplug.DIMM_SLOTS},maxmem={spec.max_memory_mib}M"
    if spec.max_vcpus is not None and spec.max_vcpus < spec.vcpus:
        raise q.BadValue("vcpus", f"{spec.vcpus} is above maxVcpus ({spec.max_vcpus})")
    if spec.max_vcpus is not None and spec.max_vcpus > spec.vcpus:
        smp = f"{spec.vcpus},maxcpus={spec.max_vcpus}"
    return ["-m", memory, "-smp", smp]


def _live_devices(spec: InstanceSpec, plugged: hotplug.Plugged) -> list[str]:
    """The balloon (with maxMemory), then what was hotplugged into the running QEMU since its start, as
    boot devices, for a migration target (same ids, same slots: QEMU's device state must match)."""
    out = []
    if spec.max_memory_mib is not None:
        out += ["-device", f"virtio-balloon-pci,id={hotplug.BALLOON_ID}"]
    for dimm in plugged.dimms:
        backend = [("id", dimm.backend), ("size", f"{dimm.size_mib}M")]
        out += ["-object", q.join("memory-backend-ram", backend),
                "-device", q.join("pc-dimm", [("id", dimm.id), ("memdev", dimm.backend)])]
    for cpu in plugged.cpus:
        props = [(k, str(v)) for k, v in cpu.props]
        out += ["-device", q.join(q.token("cpu", cpu.driver), [("id", q.token("cpu", cpu.id)), *props])]
    return out


_NIC_FIELD = "nics"


def _live_pci(spec: InstanceSpec, node: NodeSpec, paths: InstancePaths, plugged: hotplug.Plugged,
              ifup_path: str) -> tuple[list[str], tuple[NicFile, ...]]:
    """Disks and NICs added live to the QEMU this one replaces (a migration target), at their slots
    (`addr=`), with their live names. Last, after extra_args: the slots were free in the source after all
    of its boot devices, so no device given here takes the slot an auto-placed one had there."""
    out: list[str] = []
    files: list[NicFile] = []
    for p in plugged.disks:
        out += _blockdev(p.id, p.disk, f"disks[{p.disk.path}]")
        out += ["-device", q.join("virtio-blk-pci", [*_disk_dev(p.id, p.disk), ("addr", f"0x{p.slot:x}")])]
    for n in plugged.nics:
        nic = n.nic
        mac = q.mac(_NIC_FIELD, nic.mac)  # checked as nics[i].mac when it was added
        netdev = devplug.netdev_id(n.id)
        if nic.mode is NicMode.USER:
            out += ["-netdev", f"user,id={netdev}"]
        else:
            name = tap_ifname(node, spec.name, n.index)
            out += ["-netdev", q.join("tap", [("id", netdev), ("ifname", name), ("script", ifup_path),
                                              ("downscript", "no")])]
            files.append(NicFile(paths.nic_file(name), hook_config(spec.name, n.index, nic, name)))
        out += ["-device", q.join(NIC_DEVICE[nic.model], [("id", n.id), ("netdev", netdev), ("mac", mac),
                                                          ("addr", f"0x{n.slot:x}")])]
    return out, tuple(files)


def _socket(chardev_id: str, path: str, extra: list[tuple[str, str]] | None = None) -> str:
    opts = [("id", chardev_id), ("path", path), ("server", "on"), ("wait", "off"), *(extra or [])]
    return q.join("socket", opts)


def _qmp(chardev_id: str, path: str) -> list[str]:
    return ["-chardev", _socket(chardev_id, path), "-mon", f"chardev={chardev_id},mode=control"]


def _serial(spec: InstanceSpec, paths: InstancePaths, serial_log: bool) -> list[str]:
    if not spec.serial_console:
        return ["-serial", "none"]
    extra = [("logfile", paths.serial_log)] if serial_log else []
    return ["-chardev", _socket("serial0", paths.serial, extra), "-serial", "chardev:serial0"]


def _display(spec: InstanceSpec) -> list[str]:
    out = ["-display", "none"]
    vnc = spec.vnc
    if vnc is None:
        return [*out, "-vga", "none"]
    if not 0 <= vnc.display <= 65535 - 5900:
        raise q.BadValue("vnc.display", f"must be 0-{65535 - 5900}, not {vnc.display}")
    out += ["-vga", "std"]
    opts: list[tuple[str, str]] = []
    if vnc.password_file is not None:
        q.path("vnc.password_file", vnc.password_file)  # read by the executor, never passed to QEMU
        opts.append(("password", "on"))
    if vnc.tls is not None:
        x509_dir = q.path("vnc.tls.x509_dir", vnc.tls.x509_dir)
        x509 = [("id", VNC_TLS_ID), ("dir", x509_dir), ("endpoint", "server")]
        out += ["-object", q.join("tls-creds-x509", x509)]
        opts.append(("tls-creds", VNC_TLS_ID))
    out += ["-vnc", q.join(f"{q.host('vnc.bind', vnc.bind)}:{vnc.display}", opts)]
    return [*out, "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0"]


def _kernel(spec: InstanceSpec) -> list[str]:
    k = spec.kernel
    if k is None:
        return []
    out = ["-kernel", q.path("kernel.path", k.kernel)]
    if k.initrd is not None:
        out += ["-initrd", q.path("kernel.initrd", k.initrd)]
    words = []
    if k.root:
        words += [f"root={q.no_control('kernel.root', k.root)}", "ro"]
    if spec.serial_console:
        words.append(f"console=ttyS0,{SERIAL_BAUD}")
    if k.cmdline:
        words.append(q.no_control("kernel.cmdline", k.cmdline))
    return [*out, "-append", " ".join(words)] if words else out


def _disks(spec: InstanceSpec) -> list[str]:
    out: list[str] = []
    scsi = False
    for i, disk in enumerate(spec.disks):
        if disk.bus is DiskBus.SCSI and not scsi:
            out += ["-device", "virtio-scsi-pci,id=scsi0"]
            scsi = True
        out += _disk(i, disk)
    return out


def _disk(i: int, disk: Disk) -> list[str]:
    field = f"disks[{i}]"
    if disk.bus is DiskBus.IDE and disk.read_only:
        raise q.BadValue(f"{field}.read_only",
                         "the ide bus cannot attach read-only disks; use virtio or scsi")
    node = f"disk{i}"
    dev = _disk_dev(node, disk)
    if disk.bus is DiskBus.SCSI:
        dev.insert(2, ("bus", "scsi0.0"))
    if disk.boot:
        dev.insert(len(dev) - (0 if disk.read_only else 1), ("bootindex", "0"))
    return [*_blockdev(node, disk, field), "-device", q.join(_DISK_DEVICE[disk.bus], dev)]


def _blockdev(node: str, disk: Disk, field: str) -> list[str]:
    """The file node `<node>-file` and the format node `<node>-format` of a disk."""
    path = q.path(f"{field}.path", disk.path)
    direct, no_flush, _ = _CACHE[disk.cache]
    cache = [("cache.direct", q.on_off(direct)), ("cache.no-flush", q.on_off(no_flush))]
    ro = [("read-only", "on")] if disk.read_only else []
    driver = "host_device" if path.startswith("/dev/") else "file"
    file_node = q.join(None, [("driver", driver), ("node-name", f"{node}-file"), ("filename", path),
                              *ro, *cache])
    fmt_node = q.join(None, [("driver", disk.format.value), ("node-name", f"{node}-format"),
                             ("file", f"{node}-file"), *ro, *cache])
    return ["-blockdev", file_node, "-blockdev", fmt_node]


def _disk_dev(node: str, disk: Disk) -> list[tuple[str, str]]:
    dev = [("id", node), ("drive", f"{node}-format")]
    if not disk.read_only:
        dev.append(("write-cache", q.on_off(_CACHE[disk.cache][2])))
    return dev


def _seed(spec: InstanceSpec, paths: InstancePaths) -> list[str]:
    """The cloud-init seed as a read-only CD-ROM (the guest finds it by its label, cidata)."""
    if spec.cloud_init is None:
        return []
    path = q.path("cloud_init", paths.seed)
    file_node = q.join(None, [("driver", "file"), ("node-name", "seed0-file"), ("filename", path),
                              ("read-only", "on")])
    fmt_node = q.join(None, [("driver", "raw"), ("node-name", "seed0-format"), ("file", "seed0-file"),
                             ("read-only", "on")])
    return ["-blockdev", file_node, "-blockdev", fmt_node, "-device", "ide-cd,id=seed0,drive=seed0-format"]


AGENT_PORT = "org.qemu.guest_agent.0"


def _agent(spec: InstanceSpec, paths: InstancePaths) -> list[str]:
    """qemu-guest-agent's virtio-serial port, served by QEMU on the instance's agent socket."""
    if not spec.guest_agent:
        return []
    sock = check_socket_path(paths.agent)
    return ["-device", "virtio-serial-pci,id=agent-serial0", "-chardev", _socket("agent0", sock),
            "-device", f"virtserialport,bus=agent-serial0.0,chardev=agent0,name={AGENT_PORT}"]


def _nics(spec: InstanceSpec, node: NodeSpec, paths: InstancePaths,
          ifup_path: str) -> tuple[list[str], tuple[NicFile, ...]]:
    if not spec.nics:
        return ["-nic", "none"], ()
    out: list[str] = []
    files: list[NicFile] = []
    for i, nic in enumerate(spec.nics):
        mac = q.mac(f"nics[{i}].mac", nic.mac)
        netdev = f"net{i}"
        if nic.mode is NicMode.USER:
            out += ["-netdev", f"user,id={netdev}"]
        else:
            name = tap_ifname(node, spec.name, i)
            out += ["-netdev", q.join("tap", [("id", netdev), ("ifname", name), ("script", ifup_path),
                                              ("downscript", "no")])]
            files.append(NicFile(paths.nic_file(name), hook_config(spec.name, i, nic, name)))
        dev = [("id", f"nic{i}"), ("netdev", netdev), ("mac", mac)]
        out += ["-device", q.join(NIC_DEVICE[nic.model], dev)]
    return out, tuple(files)


def hook_config(instance: str, i: int, nic: Nic, name: str) -> ifup.NicHookConfig:
    bridge = None if nic.bridge is None else q.ifname(f"nics[{i}].bridge", nic.bridge)
    hook = None if nic.hook is None else q.path(f"nics[{i}].hook", nic.hook)
    ip = None if nic.ip is None else q.text(f"nics[{i}].ip", nic.ip)
    return ifup.NicHookConfig(instance=instance, interface=name, mac=nic.mac, ip=ip, bridge=bridge, hook=hook)


def _incoming_uri(incoming: IncomingSpec) -> str:
    if incoming.address is None:
        return "defer"
    if not 1 <= incoming.port <= 65535:
        raise q.BadValue("incoming.port", f"must be 1-65535, not {incoming.port}")
    return f"tcp:{q.host('incoming.address', incoming.address)}:{incoming.port}"
