"""`reconciler node-info`: each node's resources and QEMU capabilities, as placement sees them.

The seed's GetNodeInfo parsed /proc/meminfo and /proc/cpuinfo by hand and guessed "free" memory; here
psutil gives total/available, and the memory our instances use is the sum of the recorded memory of our
running instances (what placement reserves), next to what the node allows (Node memory, or the host's
total). KVM is "usable" only if /dev/kvm opens read-write, the same test QEMU makes. Every fact is the
host's own (reconciler.hostfacts, asked of each node, remote ones over SSH, all at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass

from reconciler import fleet, model
from reconciler.actual import ActualState, UnreachableNode
from reconciler.commands.status import load_desired, split_targets
from reconciler.errors import RemoteHostError, UsageError
from reconciler.hostfacts import HostFacts
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class NodeInfo(Value):
    """One node's facts, as `node-info` prints them."""

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
    uefi_firmware: bool  # OVMF is on the node (firmware: uefi)
    secure_boot_firmware: bool  # its secure-boot build too (secureBoot: true)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--node", metavar="NAME", help="show only this node (and ask only it)")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="manifest files/directories (default ./manifests)")


def run(args: argparse.Namespace) -> int:
    names, paths = split_targets(args.paths)
    if names:
        raise UsageError(f"node-info takes manifest paths; {names[0]!r} is not one")
    _, nodes = load_desired(paths)
    if args.node is not None:
        if args.node not in {n.name for n in nodes}:
            raise UsageError(f"--node {args.node}: not declared in the manifests")
        nodes = [n for n in nodes if n.name == args.node]
    infos, unreachable = asyncio.run(_gather(nodes))
    if args.json:
        doc: dict[str, object] = {"nodes": [asdict(i) for i in infos]}
        if unreachable:
            doc["unreachable"] = [u.to_json() for u in unreachable]
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render(infos), end="")
        print("".join(f"node {u.node}  {u.reach.value}: {u.detail}\n\n" for u in unreachable), end="")
    for u in unreachable:
        print(u.error, file=sys.stderr)
    return 1 if unreachable else 0


async def _gather(nodes: list[model.NodeSpec]) -> tuple[list[NodeInfo], list[UnreachableNode]]:
    """Every node's facts and instances, all nodes at once (remote ones over SSH)."""
    async with fleet.opened(nodes) as opened:
        actual = await opened.discover()
        reachable = [n for n in nodes if n.name in opened.nodes]
        answers = await asyncio.gather(*(opened.nodes[n.name].facts() for n in reachable),
                                       return_exceptions=True)
        infos = []
        for spec, answer in zip(reachable, answers, strict=True):
            if isinstance(answer, RemoteHostError):
                opened.lost(spec.name, answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                infos.append(node_info(spec, actual, answer))
        return infos, [opened.unreachable[n] for n in sorted(opened.unreachable)]


def node_info(node: model.NodeSpec, actual: ActualState, facts: HostFacts) -> NodeInfo:
    running = [i for i in actual if i.node == node.name and i.state.has_process and i.spec is not None]
    total = facts.memory_total_mib
    return NodeInfo(
        name=node.name, state_dir=node.state_dir, accelerator=node.accelerator.value,
        memory_total_mib=total, memory_available_mib=facts.memory_available_mib,
        memory_allocatable_mib=node.memory_mib if node.memory_mib is not None else total,
        memory_instances_mib=sum(i.spec.memory_mib for i in running if i.spec is not None),
        instances_running=len(running),
        cpus=facts.cpus, load_average=facts.load_average,
        qemu_binary=node.qemu_binary, qemu_path=facts.qemu_path, qemu_version=facts.qemu_version,
        kvm_usable=facts.kvm_usable, kvm_detail=facts.kvm_detail,
        uefi_firmware=facts.uefi, secure_boot_firmware=facts.secure_boot,
    )


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
            "  firmware     bios; uefi " + ("(OVMF present" + (", with secure boot)" if i.secure_boot_firmware
                                                               else ", no secure-boot build)")
                                            if i.uefi_firmware else "not available (apt install ovmf)"),
            "",
        ]
    return "\n".join(out)
