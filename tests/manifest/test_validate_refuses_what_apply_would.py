"""`validate` refuses everything that a start would refuse from the manifest alone (issue 11).

Each row is one refusal of the argv builder (reconciler/argv.py, reconciler/qemuopts.py, layout's socket
check) that depends only on the manifest: the manifest that triggers it, the exact problem `validate`
reports (file:line, the manifest's own field name), and proof that the start would indeed refuse the same
value (the model object with that value, built past validate, makes `build_launch` raise ArgvError on
the named field). `test_every_argv_refusal_is_listed` reads argv.py for the fields it can refuse, so a
new refusal there must be added here.
"""

# ruff: noqa: E501  (table rows are kept one per line)
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from reconciler import argv, manifest, model
from reconciler.errors import ArgvError
from tests.manifest.helpers import NODE_A, instance, write_tree

Mutate = Callable[[model.InstanceSpec, model.NodeSpec], tuple[model.InstanceSpec, model.NodeSpec]]


@dataclass(frozen=True)
class Case:
    id: str
    extra: str  # appended under the instance's spec (see helpers.instance)
    problem: str  # the problem as printed, after "file:line:column: "
    argv_field: str  # the field build_launch names for the same value
    mutate: Mutate  # the good model objects -> the same value, past validate
    node: str = NODE_A
    line: int = 0  # the problem's line in its file (0: not checked)


def _inst(**changes: object) -> Mutate:
    return lambda spec, node: (replace(spec, **changes), node)  # type: ignore[arg-type]


def _node(**changes: object) -> Mutate:
    return lambda spec, node: (spec, replace(node, **changes))  # type: ignore[arg-type]


def _nic(**changes: object) -> Mutate:
    return lambda spec, node: (replace(spec, nics=(replace(spec.nics[0], **changes),)), node)  # type: ignore[arg-type]


def _kernel(**changes: object) -> Mutate:
    base = model.KernelBoot(kernel="/boot/vmlinuz", root="/dev/vda1")
    return lambda spec, node: (replace(spec, kernel=replace(base, **changes)), node)  # type: ignore[arg-type]


BRIDGED = '  nics:\n    - {{mac: "52:54:00:00:00:01", mode: bridge, bridge: {bridge}}}\n'
KERNEL = "  kernel: {{path: {path}, root: {root}{more}}}\n"
LONG_STATE_DIR = "/var/lib/" + "d" * 69  # qmp-watch.sock of web1: 108 bytes, one too many


CASES = [
    Case("ide-readOnly", "  disks:\n    - {path: /srv/a.img, bus: ide, readOnly: true}\n",
         "instance web1: spec.disks[0].readOnly: the ide bus cannot attach read-only disks; use virtio or scsi",
         "disks[0].read_only",
         _inst(disks=(model.Disk(path="/srv/a.img", bus=model.DiskBus.IDE, read_only=True, boot=True),)),
         line=12),
    Case("machine-newline", '  machine: "pc\\n"\n',
         "instance web1: spec.machine: 'pc\\n' is not valid here: it contains characters that are not allowed",
         "machine", _inst(machine="pc\n"), line=11),
    Case("cpuModel-newline", '  cpuModel: "qemu64\\n"\n',
         "instance web1: spec.cpuModel: 'qemu64\\n' is not valid here: it contains characters that are not "
         "allowed", "cpu_model", _inst(cpu_model="qemu64\n"), line=11),
    Case("cpuModel-host-features-on-tcg", "  cpuModel: host,+vmx\n",
         "instance web1: spec.cpuModel: cpuModel host needs a kvm node; node-a uses tcg",
         "cpu_model", _inst(cpu_model="host,+vmx"), line=11),
    Case("bridge-newline", BRIDGED.format(bridge='"br0\\n"'),
         "instance web1: spec.nics[0].bridge: 'br0\\n' is not valid here: an interface name (letters, "
         "digits, '_', '.', '-', at most 15 characters)",
         "nics[0].bridge", _nic(mode=model.NicMode.BRIDGE, bridge="br0\n"), line=9),
    Case("bridge-dot", BRIDGED.format(bridge="'.'"),
         "instance web1: spec.nics[0].bridge: '.' is not a network interface name",
         "nics[0].bridge", _nic(mode=model.NicMode.BRIDGE, bridge="."), line=9),
    Case("bridge-dotdot", BRIDGED.format(bridge="'..'"),
         "instance web1: spec.nics[0].bridge: '..' is not a network interface name",
         "nics[0].bridge", _nic(mode=model.NicMode.BRIDGE, bridge=".."), line=9),
    Case("nic-hook-newline", '  nics:\n    - {mac: "52:54:00:00:00:01", bridge: br0, hook: "/bin/h\\n"}\n',
         "instance web1: spec.nics[0].hook: hook contains the control character '\\n'",
         "nics[0].hook", _nic(mode=model.NicMode.BRIDGE, bridge="br0", hook="/bin/h\n"), line=9),
    Case("nic-ip-zone-newline", '  nics:\n    - {mac: "52:54:00:00:00:01", bridge: br0, ip: "fe80::1%\\n"}\n',
         "instance web1: spec.nics[0].ip: 'fe80::1%\\n': an IPv6 zone (%...) cannot be passed to QEMU",
         "nics[0].ip", _nic(mode=model.NicMode.BRIDGE, bridge="br0", ip="fe80::1%\n"), line=9),
    Case("nic-mac", '  nics:\n    - {mac: "52:54:00:00:00:0g", mode: user}\n',
         "instance web1: spec.nics[0].mac: '52:54:00:00:00:0g' is not a MAC address like 52:54:00:12:34:56",
         "nics[0].mac", _nic(mac="52:54:00:00:00:0g"), line=9),
    Case("nic-mac-multicast", '  nics:\n    - {mac: "53:54:00:00:00:01", mode: user}\n',
         "instance web1: spec.nics[0].mac: '53:54:00:00:00:01' is a multicast address (the first octet "
         "must be even)", "nics[0].mac", _nic(mac="53:54:00:00:00:01"), line=9),
    Case("vnc-passwordFile-newline", '  vnc: {passwordFile: "/etc/vnc\\n"}\n',
         "instance web1: spec.vnc.passwordFile: passwordFile contains the control character '\\n'",
         "vnc.password_file", _inst(vnc=model.Vnc(password_file="/etc/vnc\n")), line=11),
    Case("vnc-tls-x509Dir-newline", '  vnc: {tls: {x509Dir: "/etc/pki\\n"}}\n',
         "instance web1: spec.vnc.tls.x509Dir: x509Dir contains the control character '\\n'",
         "vnc.tls.x509_dir", _inst(vnc=model.Vnc(tls=model.VncTls(x509_dir="/etc/pki\n"))), line=11),
    Case("vnc-bind-zone", "  vnc: {bind: 'fe80::1%eth0'}\n",
         "instance web1: spec.vnc.bind: 'fe80::1%eth0': an IPv6 zone (%...) cannot be passed to QEMU",
         "vnc.bind", _inst(vnc=model.Vnc(bind="fe80::1%eth0")), line=11),
    Case("kernel-path-newline", KERNEL.format(path='"/boot/vmlinuz\\n"', root="/dev/vda1", more=""),
         "instance web1: spec.kernel.path: kernel path contains the control character '\\n'",
         "kernel.path", _kernel(kernel="/boot/vmlinuz\n"), line=11),
    Case("kernel-path-relative", KERNEL.format(path="vmlinuz", root="/dev/vda1", more=""),
         "instance web1: spec.kernel.path: kernel path 'vmlinuz' must be an absolute path",
         "kernel.path", _kernel(kernel="vmlinuz"), line=11),
    Case("kernel-initrd-newline", KERNEL.format(path="/boot/vmlinuz", root="/dev/vda1",
                                                more=', initrd: "/boot/initrd\\n"'),
         "instance web1: spec.kernel.initrd: initrd path contains the control character '\\n'",
         "kernel.initrd", _kernel(initrd="/boot/initrd\n"), line=11),
    Case("kernel-root-newline", KERNEL.format(path="/boot/vmlinuz", root='"/dev/vda1\\n"', more=""),
         "instance web1: spec.kernel.root: the root device contains the control character '\\n'",
         "kernel.root", _kernel(root="/dev/vda1\n"), line=11),
    Case("kernel-cmdline-tab", KERNEL.format(path="/boot/vmlinuz", root="/dev/vda1", more=', cmdline: "a\\tb"'),
         "instance web1: spec.kernel.cmdline: the kernel command line contains the control character '\\t'",
         "kernel.cmdline", _kernel(cmdline="a\tb"), line=11),
    Case("disk-path-newline", '  disks:\n    - {path: "/srv/a\\n.img"}\n',
         "instance web1: spec.disks[0].path: disk path contains the control character '\\n'",
         "disks[0].path", _inst(disks=(model.Disk(path="/srv/a\n.img", boot=True),)), line=12),
    Case("disk-path-relative", "  disks:\n    - {path: a.img}\n",
         "instance web1: spec.disks[0].path: disk path 'a.img' must be an absolute path",
         "disks[0].path", _inst(disks=(model.Disk(path="a.img", boot=True),)), line=12),
    Case("extra-args-nul", '  qemuExtraArgs: ["-a\\0b"]\n',
         "instance web1: spec.qemuExtraArgs[0]: contains a NUL character",
         "extra_args[0]", _inst(extra_args=("-a\0b",)), line=11),
    Case("name", "", "", "name", _inst(name="Web1")),  # the schema's DNS label: see test_bad_input
    Case("stateDir-newline", "",
         "node node-a: spec.stateDir: stateDir contains the control character '\\n'",
         "node.state_dir", _node(state_dir="/var/lib/reconciler/node-a\n"),
         node=NODE_A.replace("stateDir: /var/lib/reconciler/node-a", 'stateDir: "/var/lib/reconciler/node-a\\n"'),
         line=6),
    Case("stateDir-sockets-too-long", "",
         f"instance web1: spec.node: its socket path on node node-a would be 108 bytes, over the limit of 107 "
         f"({LONG_STATE_DIR}/instances/web1/qmp-watch.sock); use a shorter stateDir or name",
         "node.state_dir", _node(state_dir=LONG_STATE_DIR),
         node=NODE_A.replace("/var/lib/reconciler/node-a", LONG_STATE_DIR), line=6),
    Case("qemuBinary-newline", "",
         "node node-a: spec.qemuBinary: qemuBinary contains the control character '\\n'",
         "node.qemu_binary", _node(qemu_binary="qemu\n"),
         node=NODE_A + '  qemuBinary: "qemu\\n"\n', line=9),
    Case("address-zone", "",
         "node node-a: spec.address: 'fe80::1%eth0': an IPv6 zone (%...) cannot be passed to QEMU",
         "incoming.address", _node(address="fe80::1%eth0"),
         node=NODE_A + "  address: 'fe80::1%eth0'\n", line=9),
]

# argv fields that no manifest can reach, and why
NOT_FROM_THE_MANIFEST = {
    "memory": "the schema and the builder require at least 16 MiB",
    "vcpus": "the schema requires 1 to 255",
    "vnc.display": "the schema allows 0 to 99",
    "incoming.port": "a port from the node's migration range, chosen by the executor",
    "ifup": "the bridge hook's path, the package's own",
    "firmware": "the NVRAM file's path in the instance's directory (the state directory's, checked as such)",
    "cloud_init": "the seed ISO's path in the instance's directory (the state directory's, checked as such)",
    "cpu": "a hotplugged CPU's driver and id, as QEMU's query-hotpluggable-cpus named them",
}


def _good(tmp_path: Path) -> tuple[model.InstanceSpec, model.NodeSpec]:
    write_tree(tmp_path / "good", {"node.yaml": NODE_A, "web1.yaml": instance()})
    desired = manifest.load([str(tmp_path / "good")]).desired
    assert desired is not None
    return desired.instances["web1"], desired.nodes["node-a"]


def _instance_text(extra: str) -> str:
    text = instance(extra=extra)
    if extra.startswith("  nics:"):  # the case's NICs replace the helper's
        text = re.sub(r"  nics:\n    - mac: \"52:54:00:00:00:01\"\n      mode: user\n", "", text)
    return text


@pytest.mark.parametrize("case", [c for c in CASES if c.problem], ids=lambda c: c.id)
def test_validate_refuses_it(tmp_path: Path, case: Case) -> None:
    write_tree(tmp_path, {"node.yaml": case.node, "web1.yaml": _instance_text(case.extra)})
    result = manifest.load([str(tmp_path)])
    assert result.desired is None
    shown = [str(p).split(": ", 1) for p in result.problems]
    assert [rest for _, rest in shown] == [case.problem]
    problem = result.problems[0]
    assert problem.line == case.line and problem.column > 0  # file:line:column of the field


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_start_would_refuse_it(tmp_path: Path, case: Case) -> None:
    spec, node = case.mutate(*_good(tmp_path))
    incoming = argv.IncomingSpec(node.address, 49152) if case.argv_field.startswith("incoming.") else None
    with pytest.raises(ArgvError) as caught:
        argv.build_launch(spec, node, incoming=incoming)
    assert caught.value.field == case.argv_field


def _argv_fields() -> set[str]:
    """Every field name argv.py can put in an ArgvError, with list indices as [0]."""
    source = Path(argv.__file__).read_text()
    found = set(re.findall(r"(?:q\.(?!join)\w+|BadValue)\(\s*f?[\"']([^\"']+)[\"']", source))
    found |= set(re.findall(r"ArgvError\(spec\.name, \"([^\"]+)\"", source))
    fields = set()
    for field in found:
        field = re.sub(r"\[\{i\}\]", "[0]", field)
        field = field.replace("{field}", "disks[0]")
        fields.add(field)
    return fields


def test_every_argv_refusal_is_listed() -> None:
    fields = _argv_fields()
    assert len(fields) > 15  # the scan found the builder's checks
    listed = {c.argv_field for c in CASES} | set(NOT_FROM_THE_MANIFEST)
    assert sorted(fields - listed) == []
    assert sorted(listed - fields) == []


def test_cases_are_distinct() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.problem], ids=lambda c: c.id)
def test_the_watch_daemon_holds_it_back_too(tmp_path: Path, case: Case) -> None:
    """The daemon's incremental assembly gets only files without per-file problems; the rules past the
    schema (build and cross-object) must hold the tree back there as well."""
    from reconciler.watch.assembly import Assembly

    write_tree(tmp_path, {"node.yaml": case.node, "web1.yaml": _instance_text(case.extra)})
    parsed = manifest.parse_paths(sorted(str(p) for p in tmp_path.iterdir()))
    if any(f.problems for f in parsed):
        return  # refused per file (schema): the daemon never assembles it
    assembly = Assembly()
    assembly.update({f.path: f for f in parsed})
    assert assembly.desired() is None
