"""Rules that span several objects: unique names, references, shared resources.

Each rule takes the built objects (with where they were declared) and returns problems positioned at the
offending field. One object alone is checked in build.py; these need the whole set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from reconciler import model
from reconciler.manifest.build import FieldPath
from reconciler.manifest.parse import ParsedDocument
from reconciler.manifest.problems import field_path


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule broken by the object declared in `document`, at `path` in it."""

    document: ParsedDocument
    path: FieldPath
    message: str


Where = Callable[[ParsedDocument], str]  # "file.yaml:3:1", for messages that name another place


def unique_names(documents: Iterable[ParsedDocument], where: Where) -> list[Violation]:
    """Per kind, a name may be declared once; later declarations name the first."""
    first: dict[tuple[str, str], ParsedDocument] = {}
    out = []
    for doc in documents:
        if not doc.kind or not doc.name:
            continue
        earlier = first.setdefault((doc.kind, doc.name), doc)
        if earlier is not doc:
            out.append(
                Violation(
                    doc,
                    ("metadata", "name"),
                    f"{doc.kind} {doc.name!r} is declared twice: here and at {where(earlier)}",
                )
            )
    return out


def single_defaults(defaults: list[ParsedDocument], where: Where) -> list[Violation]:
    return [
        Violation(
            doc, ("kind",), f"only one Defaults document is allowed; the first is at {where(defaults[0])}"
        )
        for doc in defaults[1:]
    ]


def node_references(
    references: Iterable[tuple[str | None, ParsedDocument]], node_names: set[str]
) -> list[Violation]:
    """Each instance's node (even of an instance that failed other rules) must be declared."""
    out = []
    for node, doc in references:
        if node is not None and node not in node_names:
            known = ", ".join(sorted(node_names)) or "none declared"
            out.append(Violation(doc, ("spec", "node"), f"node {node!r} is not declared (nodes: {known})"))
    return out


def _claims(
    items: Iterable[tuple[str, FieldPath, ParsedDocument]], what: str, where: Where
) -> list[Violation]:
    """Each key may be claimed once; later claims name the first."""
    first: dict[str, tuple[FieldPath, ParsedDocument]] = {}
    out = []
    for key, path, doc in items:
        if key in first:
            other_path, other = first[key]
            if other is doc:
                twice = f"{what} {key!r} is used twice here (also {field_path(other_path)})"
                out.append(Violation(doc, path, twice))
            else:
                owner = f"{other.kind.lower()} {other.name}"
                out.append(Violation(doc, path, f"{what} {key!r} is also used by {owner} ({where(other)})"))
        else:
            first[key] = (path, doc)
    return out


def unique_macs(
    instances: Mapping[str, tuple[model.InstanceSpec, ParsedDocument]], where: Where
) -> list[Violation]:
    return _claims(
        (
            (nic.mac, ("spec", "nics", i, "mac"), doc)
            for spec, doc in instances.values()
            for i, nic in enumerate(spec.nics)
        ),
        "MAC address",
        where,
    )


def unique_disks(
    instances: Mapping[str, tuple[model.InstanceSpec, ParsedDocument]], where: Where
) -> list[Violation]:
    return _claims(
        (
            (disk.path, ("spec", "disks", i, "path"), doc)
            for spec, doc in instances.values()
            for i, disk in enumerate(spec.disks)
        ),
        "disk path",
        where,
    )


def unique_vnc_displays(
    instances: Mapping[str, tuple[model.InstanceSpec, ParsedDocument]], where: Where
) -> list[Violation]:
    return _claims(
        (
            (f"{spec.node}:{spec.vnc.display}", ("spec", "vnc", "display"), doc)
            for spec, doc in instances.values()
            if spec.vnc is not None and spec.node is not None
        ),
        "VNC display (node:display)",
        where,
    )


def host_cpu_needs_kvm(
    instances: Mapping[str, tuple[model.InstanceSpec, ParsedDocument]], nodes: Mapping[str, model.NodeSpec]
) -> list[Violation]:
    out = []
    for spec, doc in instances.values():
        node = nodes.get(spec.node or "")
        if spec.cpu_model == "host" and node is not None and node.accelerator is not model.Accelerator.KVM:
            out.append(
                Violation(doc, ("spec", "cpuModel"), f"cpuModel host needs a kvm node; {node.name} uses tcg")
            )
    return out


def _on_machine(node: model.NodeSpec) -> str:
    """The state directory as a machine-wide key: the path, or host:port:path for a remote node."""
    return node.state_dir if node.ssh is None else f"{node.machine}:{node.state_dir}"


def node_resources(
    nodes: Mapping[str, tuple[model.NodeSpec, ParsedDocument]], where: Where
) -> list[Violation]:
    """Nodes sharing a machine must not share a state directory, nor migration ports on one address.

    Remote nodes on different hosts may use the same path (each host has its own file system)."""
    claims = ((_on_machine(n), ("spec", "stateDir"), doc) for n, doc in nodes.values())
    out = _claims(claims, "stateDir", where)
    by_address: dict[str, list[tuple[model.NodeSpec, ParsedDocument]]] = defaultdict(list)
    for node, doc in nodes.values():
        for other, other_doc in by_address[node.address]:
            a, b = node.migration_ports, other.migration_ports
            if a.first <= b.last and b.first <= a.last:
                out.append(
                    Violation(
                        doc,
                        ("spec", "migrationPorts"),
                        f"ports {a.first}-{a.last} overlap node {other.name}'s {b.first}-{b.last} "
                        f"on {node.address} ({where(other_doc)})",
                    )
                )
                break
        by_address[node.address].append((node, doc))
    return out
