"""`reconciler node-info`: each node's resources and QEMU capabilities, as placement sees them.

The seed's GetNodeInfo parsed /proc/meminfo and /proc/cpuinfo by hand and guessed "free" memory; here
psutil gives total/available, and the memory our instances use is the sum of the recorded memory of our
running instances (what placement reserves), next to what the node allows (Node memory, or the host's
total). KVM is "usable" only if /dev/kvm opens read-write, the same test QEMU makes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import asdict, dataclass

import psutil

from reconciler import discovery, launch, model
from reconciler.actual import ActualState
from reconciler.commands.status import load_desired, split_targets
from reconciler.errors import LaunchError, UsageError

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    state_dir: str
    accelerator: str
    memory_total_mib: int
    memory_available_mib: int
    memory_allocatable_mib: int  # the node's `memory`, or the host's total
    memory_instances_mib: int  # recorded memory of our running instances
    instances_running: int
    cpus: int
    load_average: tuple[float, float, float]
    qemu_binary: str
    qemu_path: str | None
    qemu_version: str | None
    kvm_usable: bool
    kvm_detail: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="manifest files/directories (default ./manifests)")


def run(args: argparse.Namespace) -> int:
    names, paths = split_targets(args.paths)
    if names:
        raise UsageError(f"node-info takes manifest paths; {names[0]!r} is not one")
    _, nodes = load_desired(paths)
    actual = discovery.discover(nodes)
    infos = [node_info(n, actual) for n in nodes]
    if args.json:
        print(json.dumps({"nodes": [asdict(i) for i in infos]}, indent=2, sort_keys=True))
    else:
        print(render(infos), end="")
    return 0


def node_info(node: model.NodeSpec, actual: ActualState) -> NodeInfo:
    mem = psutil.virtual_memory()
    running = [i for i in actual if i.node == node.name and i.state.has_process and i.spec is not None]
    qemu_path = shutil.which(node.qemu_binary)
    try:
        version = launch.qemu_version(node.qemu_binary) if qemu_path else None
    except LaunchError:
        version = None
    kvm_ok, kvm_detail = kvm_usable()
    total = mem.total // MIB
    return NodeInfo(
        name=node.name, state_dir=node.state_dir, accelerator=node.accelerator.value,
        memory_total_mib=total, memory_available_mib=mem.available // MIB,
        memory_allocatable_mib=node.memory_mib if node.memory_mib is not None else total,
        memory_instances_mib=sum(i.spec.memory_mib for i in running if i.spec is not None),
        instances_running=len(running),
        cpus=psutil.cpu_count() or 1,
        load_average=tuple(round(x, 2) for x in os.getloadavg()),  # type: ignore[arg-type]
        qemu_binary=node.qemu_binary, qemu_path=qemu_path, qemu_version=version,
        kvm_usable=kvm_ok, kvm_detail=kvm_detail,
    )


def kvm_usable(path: str = "/dev/kvm") -> tuple[bool, str]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"{path}: {err.strerror}"
    os.close(fd)
    return True, f"{path} opens read-write"


def render(infos: list[NodeInfo]) -> str:
    if not infos:
        return "no nodes declared\n"
    out = []
    for i in infos:
        load = " ".join(f"{x:.2f}" for x in i.load_average)
        out += [
            f"node {i.name}  ({i.state_dir}, accelerator {i.accelerator})",
            f"  memory       {i.memory_total_mib} MiB total, {i.memory_available_mib} MiB available",
            f"  allocatable  {i.memory_allocatable_mib} MiB; our instances use {i.memory_instances_mib} MiB"
            f" ({i.instances_running} running)",
            f"  cpus         {i.cpus}, load {load}",
            f"  qemu         {i.qemu_path or i.qemu_binary + ' (not found)'}"
            + (f", version {i.qemu_version}" if i.qemu_version else ""),
            f"  kvm          {'usable' if i.kvm_usable else 'not usable'} ({i.kvm_detail})",
            "",
        ]
    return "\n".join(out)
