"""Golden tests of the QEMU argv builder: exact expected argv for every option, table-driven.

Each case changes the spec (or node, or keyword arguments) and names the sections of the argv it expects
to differ from the base; `expected()` assembles the whole tuple, so every case checks the full argv.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.argv import DEFAULT_IFUP, IncomingSpec, Launch, NicFile, build_argv, build_launch, tap_ifname
from reconciler.errors import ArgvError
from reconciler.hooks.ifup import ENV_INSTANCE_DIR, NicHookConfig
from reconciler.model import (
    Accelerator,
    CacheMode,
    Disk,
    DiskBus,
    DiskFormat,
    InstanceSpec,
    KernelBoot,
    Nic,
    NicMode,
    NicModel,
    NodeSpec,
    Vnc,
    VncTls,
)

NODE = NodeSpec(name="n1", state_dir="/srv/rc/n1", accelerator=Accelerator.TCG)
SPEC = InstanceSpec(name="vm1", memory_mib=256)
D = "/srv/rc/n1/instances/vm1"
IFUP = "/opt/rc/ifup.py"


def sections(name: str = "vm1", d: str = D) -> dict[str, tuple[str, ...]]:
    return {
        "head": ("qemu-system-x86_64", "-name", f"guest={name}", "-nodefaults", "-no-user-config"),
        "machine": ("-machine", "pc,accel=tcg"),
        "sizes": ("-m", "256", "-smp", "1"),
        "process": ("-pidfile", f"{d}/qemu.pid", "-daemonize", "-no-shutdown"),
        "qmp": ("-chardev", f"socket,id=qmp,path={d}/qmp.sock,server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-chardev", f"socket,id=qmp-watch,path={d}/qmp-watch.sock,server=on,wait=off",
                "-mon", "chardev=qmp-watch,mode=control"),
        "serial": ("-chardev", f"socket,id=serial0,path={d}/serial.sock,server=on,wait=off,"
                               f"logfile={d}/serial.log", "-serial", "chardev:serial0"),
        "display": ("-display", "none", "-vga", "none"),
        "kernel": (),
        "disks": (),
        "nics": ("-nic", "none"),
        "tail": (),
    }


def expected(name: str = "vm1", d: str = D, **changes: tuple[str, ...]) -> tuple[str, ...]:
    secs = sections(name, d)
    assert set(changes) <= set(secs), set(changes) - set(secs)
    secs.update(changes)
    return tuple(arg for sec in secs.values() for arg in sec)


def spec(**kw: Any) -> InstanceSpec:
    return dataclasses.replace(SPEC, **kw)


def blockdev(i: int, path: str, fmt: str = "raw", *, ro: bool = False, direct: str = "on",
             no_flush: str = "off", driver: str = "file") -> tuple[str, ...]:
    r = ",read-only=on" if ro else ""
    cache = f"cache.direct={direct},cache.no-flush={no_flush}"
    return ("-blockdev", f"driver={driver},node-name=disk{i}-file,filename={path}{r},{cache}",
            "-blockdev", f"driver={fmt},node-name=disk{i}-format,file=disk{i}-file{r},{cache}")


MAC = "52:54:00:12:34:56"
KVM_NODE = dataclasses.replace(NODE, accelerator=Accelerator.KVM)
TAP0 = tap_ifname(NODE, "vm1", 0)
TAP1 = tap_ifname(NODE, "vm1", 1)

CASES: list[tuple[str, InstanceSpec, dict[str, Any], dict[str, tuple[str, ...]]]] = [
    ("minimal", SPEC, {}, {}),
    ("memory and vcpus", spec(memory_mib=4096, vcpus=4), {}, {"sizes": ("-m", "4096", "-smp", "4")}),
    ("no acpi", spec(acpi=False), {}, {"machine": ("-machine", "pc,accel=tcg,acpi=off")}),
    ("machine type", spec(machine="q35"), {}, {"machine": ("-machine", "q35,accel=tcg")}),
    ("kvm node", SPEC, {"node": KVM_NODE},
     {"machine": ("-machine", "pc,accel=kvm")}),
    ("kvm node, cpu host", spec(cpu_model="host"), {"node": KVM_NODE},
     {"machine": ("-machine", "pc,accel=kvm", "-cpu", "host")}),
    ("cpu model with features, verbatim", spec(cpu_model="qemu64,+ssse3"), {},
     {"machine": ("-machine", "pc,accel=tcg", "-cpu", "qemu64,+ssse3")}),
    ("binary from node", SPEC, {"node": dataclasses.replace(NODE, qemu_binary="/usr/local/bin/qemu-kvm")},
     {"head": ("/usr/local/bin/qemu-kvm", "-name", "guest=vm1", "-nodefaults", "-no-user-config")}),
    ("foreground", SPEC, {"daemonize": False},
     {"process": ("-pidfile", f"{D}/qemu.pid", "-no-shutdown")}),
    ("serial console off", spec(serial_console=False), {}, {"serial": ("-serial", "none")}),
    ("serial without log", SPEC, {"serial_log": False},
     {"serial": ("-chardev", f"socket,id=serial0,path={D}/serial.sock,server=on,wait=off",
                 "-serial", "chardev:serial0")}),
    ("vnc on the spec's bind address", spec(vnc=Vnc(bind="192.0.2.7", display=3)), {},
     {"display": ("-display", "none", "-vga", "std", "-vnc", "192.0.2.7:3",
                  "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0")}),
    ("vnc on ipv6", spec(vnc=Vnc(bind="::1", display=0)), {},
     {"display": ("-display", "none", "-vga", "std", "-vnc", "[::1]:0",
                  "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0")}),
    ("vnc with a password file: password=on only, the password is set over QMP",
     spec(vnc=Vnc(display=1, password_file="/etc/rc/vm1.pass")), {},
     {"display": ("-display", "none", "-vga", "std", "-vnc", "127.0.0.1:1,password=on",
                  "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0")}),
    ("vnc with tls, commas in the directory doubled",
     spec(vnc=Vnc(bind="0.0.0.0", display=2, tls=VncTls(x509_dir="/etc/pki/a,b"))), {},
     {"display": ("-display", "none", "-vga", "std",
                  "-object", "tls-creds-x509,id=vnc-tls0,dir=/etc/pki/a,,b,endpoint=server",
                  "-vnc", "0.0.0.0:2,tls-creds=vnc-tls0",
                  "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0")}),
    ("vnc with a password file and tls",
     spec(vnc=Vnc(bind="::", display=0, password_file="/p", tls=VncTls(x509_dir="/etc/pki/vnc"))), {},
     {"display": ("-display", "none", "-vga", "std",
                  "-object", "tls-creds-x509,id=vnc-tls0,dir=/etc/pki/vnc,endpoint=server",
                  "-vnc", "[::]:0,password=on,tls-creds=vnc-tls0",
                  "-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0")}),
    ("kernel boot with serial", spec(kernel=KernelBoot(kernel="/k/vmlinuz", root="/dev/vda1",
                                                       initrd="/k/initrd.img", cmdline="quiet panic=-1")), {},
     {"kernel": ("-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img",
                 "-append", "root=/dev/vda1 ro console=ttyS0,115200 quiet panic=-1")}),
    ("kernel boot without serial or initrd",
     spec(serial_console=False, kernel=KernelBoot(kernel="/k/vmlinuz", root="/dev/sda")), {},
     {"serial": ("-serial", "none"), "kernel": ("-kernel", "/k/vmlinuz", "-append", "root=/dev/sda ro")}),
    ("kernel boot without root", spec(kernel=KernelBoot(kernel="/k/v,mlinuz", root="")), {},
     {"kernel": ("-kernel", "/k/v,mlinuz", "-append", "console=ttyS0,115200")}),
    ("kernel boot, nothing to append",
     spec(serial_console=False, kernel=KernelBoot(kernel="/k/vmlinuz", root="")),
     {}, {"serial": ("-serial", "none"), "kernel": ("-kernel", "/k/vmlinuz")}),
    ("virtio boot disk", spec(disks=(Disk(path="/d/a.img", boot=True),)), {},
     {"disks": (*blockdev(0, "/d/a.img"),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,bootindex=0,write-cache=on")}),
    ("qcow2 writeback",
     spec(disks=(Disk(path="/d/a.qcow2", format=DiskFormat.QCOW2, cache=CacheMode.WRITEBACK),)),
     {}, {"disks": (*blockdev(0, "/d/a.qcow2", "qcow2", direct="off"),
                    "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=on")}),
    ("writethrough", spec(disks=(Disk(path="/d/a", cache=CacheMode.WRITETHROUGH),)), {},
     {"disks": (*blockdev(0, "/d/a", direct="off"),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=off")}),
    ("directsync", spec(disks=(Disk(path="/d/a", cache=CacheMode.DIRECTSYNC),)), {},
     {"disks": (*blockdev(0, "/d/a"),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=off")}),
    ("unsafe", spec(disks=(Disk(path="/d/a", cache=CacheMode.UNSAFE),)), {},
     {"disks": (*blockdev(0, "/d/a", direct="off", no_flush="on"),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=on")}),
    ("read-only", spec(disks=(Disk(path="/d/ro.img", read_only=True),)), {},
     {"disks": (*blockdev(0, "/d/ro.img", ro=True),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format")}),
    ("block device", spec(disks=(Disk(path="/dev/vg0/vm1", boot=True),)), {},
     {"disks": (*blockdev(0, "/dev/vg0/vm1", driver="host_device"),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,bootindex=0,write-cache=on")}),
    ("ide", spec(disks=(Disk(path="/d/a", bus=DiskBus.IDE, boot=True),)), {},
     {"disks": (*blockdev(0, "/d/a"),
                "-device", "ide-hd,id=disk0,drive=disk0-format,bootindex=0,write-cache=on")}),
    ("scsi shares one controller; boot disk second",
     spec(disks=(Disk(path="/d/a", bus=DiskBus.SCSI), Disk(path="/d/b", bus=DiskBus.VIRTIO, boot=True),
                 Disk(path="/d/c", bus=DiskBus.SCSI, read_only=True))), {},
     {"disks": ("-device", "virtio-scsi-pci,id=scsi0",
                *blockdev(0, "/d/a"),
                "-device", "scsi-hd,id=disk0,drive=disk0-format,bus=scsi0.0,write-cache=on",
                *blockdev(1, "/d/b"),
                "-device", "virtio-blk-pci,id=disk1,drive=disk1-format,bootindex=0,write-cache=on",
                *blockdev(2, "/d/c", ro=True),
                "-device", "scsi-hd,id=disk2,drive=disk2-format,bus=scsi0.0")}),
    ("commas doubled, spaces and unicode kept", spec(disks=(Disk(path="/d/a,b c/ü,,.img"),)), {},
     {"disks": (*blockdev(0, "/d/a,,b c/ü,,,,.img"),
                "-device", "virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=on")}),
    ("user nic", spec(nics=(Nic(mac=MAC, mode=NicMode.USER),)), {},
     {"nics": ("-netdev", "user,id=net0", "-device", f"virtio-net-pci,id=nic0,netdev=net0,mac={MAC}")}),
    ("tap nics with models", spec(nics=(Nic(mac=MAC, bridge="br0"),
                                        Nic(mac="52:54:00:00:00:02", model=NicModel.E1000),
                                        Nic(mac="52:54:00:00:00:03", model=NicModel.RTL8139,
                                            mode=NicMode.USER))),
     {"ifup_path": IFUP},
     {"nics": ("-netdev", f"tap,id=net0,ifname={TAP0},script={IFUP},downscript=no",
               "-device", f"virtio-net-pci,id=nic0,netdev=net0,mac={MAC}",
               "-netdev", f"tap,id=net1,ifname={TAP1},script={IFUP},downscript=no",
               "-device", "e1000,id=nic1,netdev=net1,mac=52:54:00:00:00:02",
               "-netdev", "user,id=net2", "-device", "rtl8139,id=nic2,netdev=net2,mac=52:54:00:00:00:03")}),
    ("hook path with a comma", spec(nics=(Nic(mac=MAC),)), {"ifup_path": "/opt/a,b/ifup"},
     {"nics": ("-netdev", f"tap,id=net0,ifname={TAP0},script=/opt/a,,b/ifup,downscript=no",
               "-device", f"virtio-net-pci,id=nic0,netdev=net0,mac={MAC}")}),
    ("incoming tcp", SPEC, {"incoming": IncomingSpec("192.0.2.1", 49152)},
     {"tail": ("-incoming", "tcp:192.0.2.1:49152")}),
    ("incoming ipv6", SPEC, {"incoming": IncomingSpec("::1", 49153)},
     {"tail": ("-incoming", "tcp:[::1]:49153")}),
    ("incoming defer", SPEC, {"incoming": IncomingSpec()}, {"tail": ("-incoming", "defer")}),
    ("extra args last, verbatim", spec(extra_args=("-rtc", "base=utc,clock=host")),
     {"incoming": IncomingSpec()}, {"tail": ("-incoming", "defer", "-rtc", "base=utc,clock=host")}),
]


@pytest.mark.parametrize(("spec_", "kw", "changes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_golden(spec_: InstanceSpec, kw: dict[str, Any], changes: dict[str, tuple[str, ...]]) -> None:
    kw = dict(kw)
    node = kw.pop("node", NODE)
    assert build_launch(spec_, node, **kw).argv == expected(**changes)


def test_build_argv_is_build_launch_argv_and_frozen() -> None:
    argv = build_argv(SPEC, NODE)
    assert isinstance(argv, tuple)
    assert argv == expected()
    assert build_argv(SPEC, NODE, incoming=IncomingSpec()) == expected(tail=("-incoming", "defer"))


def test_default_hook_is_the_shipped_executable() -> None:
    import os

    assert DEFAULT_IFUP.endswith("/reconciler/hooks/ifup.py")
    assert os.access(DEFAULT_IFUP, os.X_OK)
    argv = build_argv(spec(nics=(Nic(mac=MAC),)), NODE)
    assert f"script={DEFAULT_IFUP.replace(',', ',,')}" in argv[argv.index("-netdev") + 1]


def test_name_at_the_63_char_limit() -> None:
    name = "a" * 62 + "z"
    node = dataclasses.replace(NODE, state_dir="/r")
    d = f"/r/instances/{name}"
    assert build_argv(spec(name=name), node) == expected(name, d)


def test_launch_files_and_env_for_tap_nics() -> None:
    tap = Nic(mac="52:54:00:00:00:09", bridge="br-lan", ip="192.0.2.9", hook="/etc/rc/vif")
    s = spec(nics=(Nic(mac=MAC, mode=NicMode.USER), tap))
    launch = build_launch(s, NODE, ifup_path=IFUP)
    assert launch.env == (("RECONCILER_INSTANCE_DIR", D),)
    cfg = NicHookConfig(instance="vm1", interface=TAP1, mac="52:54:00:00:00:09", ip="192.0.2.9",
                        bridge="br-lan", hook="/etc/rc/vif")
    assert launch.nic_files == (NicFile(f"{D}/nic-{TAP1}.json", cfg),)
    assert NicHookConfig.from_json(launch.nic_files[0].text) == cfg
    assert launch.paths.pidfile == f"{D}/qemu.pid"


def test_no_tap_nics_no_env_unless_a_tap_can_be_hotplugged() -> None:
    # q35 cannot hotplug (no root ports): no tap ever, no env. `pc` may get a tap live: the hook's env.
    launch = build_launch(spec(nics=(Nic(mac=MAC, mode=NicMode.USER),), machine="q35"), NODE)
    assert (launch.env, launch.nic_files) == ((), ())
    assert isinstance(launch, Launch)
    pc = build_launch(spec(nics=(Nic(mac=MAC, mode=NicMode.USER),)), NODE)
    assert (pc.env, pc.nic_files) == (((ENV_INSTANCE_DIR, D),), ())


def test_tap_names_fit_ifnamsiz_and_differ_per_node_and_instance() -> None:
    other = dataclasses.replace(NODE, state_dir="/srv/rc/n2")
    names = {tap_ifname(NODE, "vm1", 0), tap_ifname(other, "vm1", 0), tap_ifname(NODE, "vm2", 0),
             tap_ifname(NODE, "vm1", 1)}
    assert len(names) == 4
    assert len(tap_ifname(NODE, "a" * 63, 999)) <= 15


LONG_DIR = "/" + "s" * (107 - len("/instances/vm1/qmp-watch.sock") - 1)

REJECTED: list[tuple[str, InstanceSpec, dict[str, Any], str, str]] = [
    ("newline in disk path", spec(disks=(Disk(path="/d/a\nb"),)), {}, "disks[0].path", "control character"),
    ("NUL in disk path", spec(disks=(Disk(path="/d/a\0b"),)), {}, "disks[0].path", "control character"),
    ("relative disk path", spec(disks=(Disk(path="d/a.img"),)), {}, "disks[0].path", "absolute"),
    ("empty disk path", spec(disks=(Disk(path=""),)), {}, "disks[0].path", "empty"),
    ("ide read-only", spec(disks=(Disk(path="/d/a", bus=DiskBus.IDE, read_only=True),)), {},
     "disks[0].read_only", "ide"),
    ("newline in kernel path", spec(kernel=KernelBoot(kernel="/k/a\n", root="/dev/vda")), {}, "kernel.path",
     "control"),
    ("relative initrd", spec(kernel=KernelBoot(kernel="/k/a", initrd="i.img", root="/dev/vda")), {},
     "kernel.initrd", "absolute"),
    ("newline in cmdline", spec(kernel=KernelBoot(kernel="/k/a", root="/dev/vda", cmdline="a\nb")), {},
     "kernel.cmdline", "control"),
    ("name too long", spec(name="a" * 64), {}, "name", "64 characters"),
    ("name escapes the state dir", spec(name="../etc"), {}, "name", "DNS label"),
    ("uppercase name", spec(name="Web"), {}, "name", "DNS label"),
    ("socket path one byte too long", SPEC, {"node": dataclasses.replace(NODE, state_dir=LONG_DIR + "x")},
     "node.state_dir", "108 bytes"),
    ("unicode counts in bytes", SPEC, {"node": dataclasses.replace(NODE, state_dir=LONG_DIR[:-1] + "é")},
     "node.state_dir", "108 bytes"),
    ("relative state dir", SPEC, {"node": dataclasses.replace(NODE, state_dir="state")}, "node.state_dir",
     "absolute"),
    ("cpu host on tcg", spec(cpu_model="host"), {}, "cpu_model", "KVM"),
    ("cpu host with features on tcg", spec(cpu_model="host,+avx"), {}, "cpu_model", "KVM"),
    ("machine with a comma", spec(machine="pc,accel=kvm"), {}, "machine", "letters"),
    ("zero memory", spec(memory_mib=0), {}, "memory", "at least 1"),
    ("zero vcpus", spec(vcpus=0), {}, "vcpus", "at least 1"),
    ("bad mac", spec(nics=(Nic(mac="52:54:00:12:34"),)), {}, "nics[0].mac", "MAC"),
    ("multicast mac", spec(nics=(Nic(mac="01:00:5e:00:00:01"),)), {}, "nics[0].mac", "multicast"),
    ("bridge name too long", spec(nics=(Nic(mac=MAC, bridge="b" * 16),)), {}, "nics[0].bridge", "1-15"),
    ("relative user hook", spec(nics=(Nic(mac=MAC, hook="vif-up"),)), {}, "nics[0].hook", "absolute"),
    ("vnc bind with a comma", spec(vnc=Vnc(bind="127.0.0.1,reverse=on")), {}, "vnc.bind", "hostname"),
    ("vnc display out of range", spec(vnc=Vnc(display=-1)), {}, "vnc.display", "0-"),
    ("vnc relative password file", spec(vnc=Vnc(password_file="vm1.pass")), {}, "vnc.password_file",
     "absolute"),
    ("vnc tls directory with a newline", spec(vnc=Vnc(tls=VncTls(x509_dir="/etc/pki\n"))), {},
     "vnc.tls.x509_dir", "control character"),
    ("incoming port 0", SPEC, {"incoming": IncomingSpec("127.0.0.1", 0)}, "incoming.port", "1-65535"),
    ("incoming address junk", SPEC, {"incoming": IncomingSpec("a b", 1)}, "incoming.address", "hostname"),
    ("NUL in extra args", spec(extra_args=("-S", "a\0")), {}, "extra_args[1]", "NUL"),
    ("relative hook executable", spec(nics=(Nic(mac=MAC),)), {"ifup_path": "ifup.py"}, "ifup", "absolute"),
]


@pytest.mark.parametrize(("spec_", "kw", "field", "needle"), [c[1:] for c in REJECTED],
                         ids=[c[0] for c in REJECTED])
def test_rejected(spec_: InstanceSpec, kw: dict[str, Any], field: str, needle: str) -> None:
    kw = dict(kw)
    node = kw.pop("node", NODE)
    with pytest.raises(ArgvError) as info:
        build_launch(spec_, node, **kw)
    err = info.value
    assert (err.instance, err.field) == (spec_.name, field)
    assert needle in err.detail
    assert "\n" not in str(err)


def test_socket_path_at_the_limit_is_accepted() -> None:
    node = dataclasses.replace(NODE, state_dir=LONG_DIR)
    launch = build_launch(SPEC, node)
    assert len(launch.paths.qmp_watch.encode()) == 107
