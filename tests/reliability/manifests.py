"""Hypothesis strategies for manifests: valid-by-construction document sets, and ways to break them.

Why here: the fuzzers need manifests that exercise every field (so a mutation can hit any of them), and
mutations that stay close to valid input (a random byte string rarely gets past the YAML parser). A
generated set always loads cleanly unmutated; `test_fuzz_manifest` checks that too, so the generator
cannot silently drift into producing only broken input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import yaml
from hypothesis import strategies as st

Doc = dict[str, Any]
Path = tuple[str | int, ...]

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
SIZES = st.sampled_from(["128M", "256M", "1G", 512, "64MiB", "0.5G"])
DURATIONS = st.sampled_from(["30s", "2m", 10, 0.5, "300ms", "1h"])


def _doc(kind: str, name: str, spec: Doc, labels: dict[str, str] | None = None) -> Doc:
    meta: Doc = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "reconciler/v1", "kind": kind, "metadata": meta, "spec": spec}


@st.composite
def node_doc(draw: st.DrawFn, name: str, index: int) -> Doc:
    first = 49152 + 64 * index  # nodes on one address must not share migration ports
    spec: Doc = {"stateDir": f"/var/lib/reconciler/{name}",
                 "migrationPorts": {"first": first, "last": first + draw(st.integers(0, 63))}}
    if draw(st.booleans()):
        spec["address"] = draw(st.sampled_from(["127.0.0.1", "::1", "192.0.2.7"]))
    if draw(st.booleans()):
        spec["accelerator"] = draw(st.sampled_from(["kvm", "tcg"]))
    if draw(st.booleans()):
        spec["qemuBinary"] = draw(st.sampled_from(["qemu-system-x86_64", "/usr/bin/qemu-system-x86_64"]))
    if draw(st.booleans()):
        spec["memory"] = draw(st.sampled_from(["64G", 65536, "1T"]))
    return _doc("Node", name, spec, draw(st.one_of(st.none(), st.just({"rack": "r1"}))))


@st.composite
def disk_lists(draw: st.DrawFn, name: str, kernel: bool) -> list[Doc]:
    disks = []
    for d in range(draw(st.integers(0, 3))):
        disk: Doc = {"path": f"/srv/vm/{name}-{d}.img"}
        disk.update(draw(st.fixed_dictionaries({}, optional={
            "format": st.sampled_from(["raw", "qcow2"]), "bus": st.sampled_from(["virtio", "scsi", "ide"]),
            "cache": st.sampled_from(["none", "writeback", "writethrough", "directsync", "unsafe"])})))
        if disk.get("bus") != "ide" and draw(st.booleans()):
            disk["readOnly"] = True
        disks.append(disk)
    if disks and not kernel and draw(st.booleans()):
        disks[draw(st.integers(0, len(disks) - 1))]["boot"] = True
    return disks


@st.composite
def instance_doc(draw: st.DrawFn, name: str, index: int, nodes: list[str]) -> Doc:
    spec: Doc = {"memory": draw(SIZES)}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "node": st.sampled_from(nodes) if nodes else st.nothing(),
        "runStrategy": st.sampled_from(["Always", "RerunOnFailure", "Once", "Manual", "Halted"]),
        "protect": st.booleans(),
        "updatePolicy": st.sampled_from(["Immediate", "Pending"]),
        "vcpus": st.integers(1, 8),
        "acpi": st.booleans(),
        "serialConsole": st.booleans(),
        "machine": st.sampled_from(["pc", "q35", "pc-i440fx-7.2"]),
        "cpuModel": st.sampled_from(["qemu64", "max", "qemu64,+ssse3"]),
        "shutdownTimeout": DURATIONS,
        "vnc": st.fixed_dictionaries({}, optional={"bind": st.sampled_from(["127.0.0.1", "0.0.0.0", "::1"])})
        .map(lambda v, i=index: {**v, "display": i}),
        "migration": st.fixed_dictionaries({}, optional={
            "mode": st.sampled_from(["live", "offline"]), "maxBandwidth": st.sampled_from(["1G", 0, "100M"]),
            "maxDowntime": st.sampled_from(["300ms", 2, "1s"]), "completionTimeoutPerGiB": DURATIONS,
            "progressTimeout": DURATIONS, "autoConverge": st.booleans(), "postCopy": st.booleans()}),
        "qemuExtraArgs": st.lists(st.sampled_from(["-device", "virtio-rng-pci", "-rtc", "base=utc"]),
                                  min_size=1, max_size=4),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    kernel = draw(st.booleans())
    if kernel:
        spec["kernel"] = {"path": "/boot/vmlinuz", "root": "/dev/vda1",
                          **draw(st.fixed_dictionaries({}, optional={
                              "initrd": st.just("/boot/initrd.img"), "cmdline": st.just("quiet")}))}
    disks = draw(disk_lists(name, kernel))
    if disks:
        spec["disks"] = disks
    nics = []
    for n in range(draw(st.integers(0, 2))):
        nic: Doc = {"mac": f"52:54:00:00:{index:02x}:{n:02x}"}
        if draw(st.booleans()):
            nic["mode"] = "user"
        else:
            nic["bridge"] = "br0"
            if draw(st.booleans()):
                nic["hook"] = "/usr/local/sbin/vif-up"
        if draw(st.booleans()):
            nic["model"] = draw(st.sampled_from(["virtio", "e1000", "rtl8139"]))
        if draw(st.booleans()):
            nic["ip"] = f"192.0.2.{index + 1}"
        nics.append(nic)
    if nics:
        spec["nics"] = nics
    if spec.get("cpuModel") == "host":
        del spec["cpuModel"]
    return _doc("Instance", name, spec, draw(st.one_of(st.none(), st.just({"tier": "web", "env": "x"}))))


@st.composite
def manifest_sets(draw: st.DrawFn) -> list[Doc]:
    """A list of documents that loads without problems (nodes, maybe Defaults, instances)."""
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    node_names, inst_names = names[: max(1, len(names) // 3)], names[max(1, len(names) // 3):]
    docs = [draw(node_doc(n, i)) for i, n in enumerate(node_names)]
    if draw(st.booleans()):
        docs.append(_doc("Defaults", "defaults", {
            "prune": draw(st.booleans()), "memory": "128M", "shutdownTimeout": "10s",
            "migration": {"mode": "live"}}))
    docs += [draw(instance_doc(n, i, node_names)) for i, n in enumerate(inst_names)]
    return docs


def dump(docs: list[Doc]) -> bytes:
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True).encode()


def paths_in(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every path to a value inside a document (each mapping key and list item, depth first)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from paths_in(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from paths_in(v, (*prefix, i))


def _nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# Replacement values: wrong types, extremes, hostile text. Deep nesting stays below the recursion limit
# here (yaml.safe_dump must emit it); deeper nesting is fuzzed as text in the tests.
HOSTILE_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**40, -(10**40), 2**63, -1, 0]),
    st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 5e-324]),
    st.text(max_size=30), st.sampled_from(["", " ", "\u202e", "é", "🙂", "a" * 5000, "../..", "/", "a,b=c",
                                           "\x7f", "\ufeff", "52:54:00:12:34:56", "-1G", "1e999"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(1, 400).map(_nested),
)


def get_at(doc: Any, path: Path) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _parent(doc: Any, path: Path) -> Any:
    return get_at(doc, path[:-1])


def set_at(doc: Any, path: Path, value: Any) -> None:
    _parent(doc, path)[path[-1]] = value


def delete_at(doc: Any, path: Path) -> None:
    del _parent(doc, path)[path[-1]]
