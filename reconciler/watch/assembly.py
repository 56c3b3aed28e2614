"""Incremental assembly: the cross-file step of manifest loading, updated one file at a time.

`manifest.assemble` rebuilds every model object and re-runs every cross-file rule on each call: about half
a second for 10,000 instances, too slow for a daemon that should replan a one-line edit in milliseconds.
This keeps, per file, the objects built from its documents and what they claim (names, MACs, disk paths,
node references), plus counters of every claim across files. Replacing one file rebuilds only that file's
objects and adjusts the counters, so "is the tree still consistent" is a look at a few sets instead of a
pass over everything (and over the instances with a VNC display, whose ports clash per node address).
A change of the Defaults document rebuilds every instance. The references (an instance's node, a base
image another instance writes, socket path lengths) are checked again only for the keys a rebuilt file
claims, unless a file with Nodes changed, and the node map and its resource verdict are kept until then.

When a rule is broken, `desired()` returns None and the caller runs the full `manifest.assemble` for the
exact, positioned problems (the slow path is only taken when something is wrong). For a consistent tree
the result equals `manifest.assemble(files).desired` (a property test checks this).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler import model
from reconciler.manifest import ParsedFile, build, rules
from reconciler.manifest.parse import ParsedDocument


@dataclass(slots=True)
class _Built:
    """What one problem-free file contributes."""

    source: ParsedFile
    instances: dict[str, model.InstanceSpec] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # model.spec_hash of each instance
    nodes: dict[str, tuple[model.NodeSpec, ParsedDocument]] = field(default_factory=dict)
    sources: dict[str, model.SourceRef] = field(default_factory=dict)
    unique: list[tuple[str, str]] = field(default_factory=list)  # claims that must be unique: (what, key)
    ports: list[model.InstanceSpec] = field(default_factory=list)  # instances with fixed ports (VNC)
    refs: list[tuple[str, str]] = field(default_factory=list)  # ("node", name) / ("host-cpu", node name)
    broken: bool = False  # a document failed to build (a name or a single-object rule)
    defaults: dict[str, Any] | None = None  # the Defaults spec it was built with
    # name -> (labels, spec as written, instance, its hash): an edit rebuilds only the documents it changed
    made: dict[str, tuple[tuple[tuple[str, str], ...], Any, model.InstanceSpec, str]] = field(
        default_factory=dict)


class _Claims:
    """Counts of claimed keys; `clashes` holds those claimed more than once."""

    def __init__(self) -> None:
        self.count: Counter[tuple[str, str]] = Counter()
        self.clashes: set[tuple[str, str]] = set()

    def add(self, keys: Iterable[tuple[str, str]], step: int) -> None:
        for key in keys:
            n = self.count[key] + step
            if n <= 0:
                del self.count[key]
            else:
                self.count[key] = n
            if n > 1:
                self.clashes.add(key)
            else:
                self.clashes.discard(key)


class Assembly:
    """The effective set of files and everything built from it."""

    def __init__(self) -> None:
        self._files: dict[str, _Built] = {}
        self._unique = _Claims()
        self._ports: dict[str, list[model.InstanceSpec]] = {}  # per file: instances with fixed ports
        self._ports_ok: bool | None = None  # their verdict; None: files with them or with nodes changed
        self._refs: Counter[tuple[str, str]] = Counter()
        self._broken: set[str] = set()  # files with a document that failed to build
        self._defaults_docs: dict[str, list[ParsedDocument]] = {}
        self._defaults: dict[str, Any] | None = None
        self._desired: model.DesiredState | None = None
        self._dirty = True
        self._names_changed = True  # the set of instance names changed: re-sort
        self._built: model.DesiredState | None = None  # the last DesiredState built
        self._touched: set[str] = set()  # files rebuilt since then
        self._structural = True  # since then a file went, or one with Nodes/Defaults changed
        self._nodes: dict[str, tuple[model.NodeSpec, ParsedDocument]] | None = None  # None: to rebuild
        self._nodes_ok = True  # rules.node_resources on `_nodes`
        self._bad_refs: set[tuple[str, str]] = set()  # references that break a rule now
        self._recheck: set[tuple[str, str]] | None = None  # references to look at again (None: all)

    def update(self, files: Mapping[str, ParsedFile], only: Collection[str] | None = None) -> int:
        """Make `files` (problem-free ParsedFiles by path) the effective set; returns files (re)built.
        `only`: the paths that may differ from the last update (the others are known to be the same),
        so the cost is theirs, not the tree's."""
        if only is None:
            removed = [p for p in self._files if p not in files]
            changed = {p: f for p, f in files.items()
                       if (b := self._files.get(p)) is None or b.source is not f}
        else:
            removed = [p for p in only if p in self._files and p not in files]
            changed = {p: f for p in only if (f := files.get(p)) is not None
                       and ((b := self._files.get(p)) is None or b.source is not f)}
        for path in removed:
            self._defaults_docs.pop(path, None)
        for path, parsed in changed.items():
            docs = [d for d in parsed.documents if d.kind == model.Kind.DEFAULTS]
            if docs:
                self._defaults_docs[path] = docs
            else:
                self._defaults_docs.pop(path, None)
        old_names = {n for p in [*removed, *changed] if p in self._files for n in self._files[p].instances}
        for path in removed:
            self._remove(path)
        defaults = self._current_defaults()
        if defaults != self._defaults:  # every instance depends on it: rebuild all
            self._defaults = defaults
            changed = {**{p: b.source for p, b in self._files.items()}, **changed}
        for path, parsed in changed.items():
            before = self._files.get(path)
            self._remove(path)
            self._add(path, parsed, before)
        self._touched.update(changed)
        if removed or any(self._files[p].nodes or p in self._defaults_docs for p in changed):
            self._structural = True
        new_names = {n for p in changed for n in self._files[p].instances}
        if old_names != new_names:
            self._names_changed = True
        if changed or removed:
            self._dirty = True
        return len(changed)

    def names_in(self, paths: Iterable[str]) -> set[str]:
        """The instances that the effective versions of `paths` declare."""
        return {name for p in paths if (b := self._files.get(p)) is not None for name in b.instances}

    def desired(self) -> model.DesiredState | None:
        """The DesiredState of the effective set, or None when a rule is broken (see module doc)."""
        if not self._dirty:
            return self._desired
        self._dirty = False
        self._desired = self._build() if self._consistent() else None
        return self._desired

    # --- internals ----------------------------------------------------------------------------------

    def _current_defaults(self) -> dict[str, Any] | None:
        docs = [d for path in sorted(self._defaults_docs) for d in self._defaults_docs[path]]
        return dict(docs[0].body["spec"]) if len(docs) == 1 else None

    def _remove(self, path: str) -> None:
        built = self._files.pop(path, None)
        if built is None:
            return
        self._unique.add(built.unique, -1)
        self._ports.pop(path, None)
        if built.ports or built.nodes:
            self._ports_ok = None
        if built.nodes:  # its Nodes (and their sources) go with it: the last build cannot be patched
            self._structural = True
        self._refs_moved(built)
        self._refs.subtract(built.refs)
        self._broken.discard(path)

    def _add(self, path: str, parsed: ParsedFile, before: _Built | None = None) -> None:
        built = _build_file(parsed, self._defaults, before)
        self._files[path] = built
        self._unique.add(built.unique, +1)
        if built.ports:
            self._ports[path] = built.ports
        if built.ports or built.nodes:
            self._ports_ok = None
        self._refs_moved(built)
        self._refs.update(built.refs)
        if built.broken:
            self._broken.add(path)

    def _refs_moved(self, built: _Built) -> None:
        """A file's claims come or go: its references are to be looked at again (all, if it has Nodes)."""
        if built.nodes:
            self._nodes = None
            self._recheck = None
        elif self._recheck is not None:
            self._recheck.update(built.refs)
            self._recheck.update(("base", key) for what, key in built.refs if what == "written")

    def _consistent(self) -> bool:
        if self._broken or self._unique.clashes:
            return False
        if sum(len(v) for v in self._defaults_docs.values()) > 1:
            return False
        if self._nodes is None:
            self._nodes = {name: item for b in self._files.values() for name, item in b.nodes.items()}
            self._nodes_ok = not rules.node_resources(self._nodes, lambda d: "")
        nodes = self._nodes
        if self._recheck is None:
            self._bad_refs = {ref for ref in self._refs if self._ref_broken(ref, nodes)}
        else:
            for ref in self._recheck:
                if self._ref_broken(ref, nodes):
                    self._bad_refs.add(ref)
                else:
                    self._bad_refs.discard(ref)
        self._recheck = set()
        if self._bad_refs or not self._nodes_ok:
            return False
        if self._ports_ok is None:  # an edit that touches no VNC display and no node costs nothing here
            specs = {name: node for name, (node, _) in nodes.items()}
            claims = ((s, None) for path in sorted(self._ports) for s in self._ports[path])
            self._ports_ok = not rules.port_clashes(claims, specs)
        return self._ports_ok

    def _ref_broken(self, ref: tuple[str, str],
                    nodes: Mapping[str, tuple[model.NodeSpec, ParsedDocument]]) -> bool:
        what, key = ref
        if self._refs.get(ref, 0) <= 0:
            return False
        node = nodes.get(key)
        if what == "node":
            return node is None
        if what == "host-cpu":
            return node is not None and node[0].accelerator is not model.Accelerator.KVM
        if what == "base":
            return self._refs.get(("written", key), 0) > 0
        if what == "sockets":
            length, _, name = key.partition("/")
            found = nodes.get(name)
            return found is not None and rules.socket_problem(found[0], "x" * int(length)) is not None
        return False

    def _build(self) -> model.DesiredState:
        built = self._patched() if not (self._structural or self._names_changed) else None
        if built is None:
            built = self._build_all()
        self._built, self._touched, self._structural = built, set(), False
        return built

    def _patched(self) -> model.DesiredState | None:
        """The last build with the touched files' instances swapped in: the same names, nodes and
        defaults, so nothing else can have moved (a 10,000-file rebuild costs ~15 ms; this, microseconds)."""
        last = self._built
        if last is None:
            return None
        instances, hashes, sources = dict(last.instances), dict(last.spec_hashes), dict(last.sources)
        for path in self._touched:
            b = self._files[path]
            instances.update(b.instances)
            hashes.update(b.hashes)
            sources.update(b.sources)
        return replace(last, instances=instances, spec_hashes=hashes, sources=sources)

    def _build_all(self) -> model.DesiredState:
        instances: dict[str, model.InstanceSpec] = {}
        nodes: dict[str, model.NodeSpec] = {}
        sources: dict[str, model.SourceRef] = {}
        hashes: dict[str, str] = {}
        for built in self._files.values():
            instances.update(built.instances)
            hashes.update(built.hashes)
            nodes.update((name, node) for name, (node, _) in built.nodes.items())
            sources.update(built.sources)
        previous = self._desired
        if self._names_changed or previous is None:
            instances = dict(sorted(instances.items()))
            self._names_changed = False
        else:
            instances = {name: instances[name] for name in previous.instances}
        prune = bool((self._defaults or {}).get("prune", False))
        return model.DesiredState(instances=instances, nodes=dict(sorted(nodes.items())), prune=prune,
                                  sources=sources, spec_hashes=hashes)


def _build_file(parsed: ParsedFile, defaults: dict[str, Any] | None, before: _Built | None = None) -> _Built:
    """Build one file's objects as `manifest.assemble` would, and list what they claim. `before`: the
    file's last version, whose instances are taken as they are where labels, spec and Defaults are the
    same (building and hashing 50 instances costs milliseconds; a one-line edit changes one)."""
    built = _Built(parsed, defaults=defaults)
    reuse = before.made if before is not None and before.defaults is defaults else {}
    base = build.clean_defaults(defaults or {})
    for doc in parsed.documents:
        if doc.kind and doc.name:
            built.unique.append(("name", f"{doc.kind}/{doc.name}"))
            built.sources[f"{doc.kind}/{doc.name}"] = model.SourceRef(doc.path, doc.line, doc.column)
        if doc.kind not in (model.Kind.NODE, model.Kind.INSTANCE):
            continue
        if build.check_name(doc.name) is not None:
            built.broken = True
            continue
        labels = build.labels_of(doc.body["metadata"])
        if doc.kind == model.Kind.NODE:
            node, issues = build.build_node(doc.name, labels, doc.body["spec"], doc.path)
            if node is not None:
                built.nodes[node.name] = (node, doc)
        else:
            instance, issues = _instance(doc, labels, base, reuse, built)
            if instance is not None:
                _claim(instance, built)
        built.broken = built.broken or bool(issues)
    return built


def _instance(doc: ParsedDocument, labels: tuple[tuple[str, str], ...], base: dict[str, Any],
              reuse: Mapping[str, tuple[tuple[tuple[str, str], ...], Any, model.InstanceSpec, str]],
              built: _Built) -> tuple[model.InstanceSpec | None, list[build.Issue]]:
    """One Instance document built (or its last build taken, when written the same), into `built`."""
    written = doc.body["spec"]
    last = reuse.get(doc.name)
    issues: list[build.Issue] = []
    if last is not None and last[0] == labels and last[1] == written:
        instance, digest = last[2], last[3]
    else:
        made, issues = build.build_instance(doc.name, labels, build.merged_spec(base, written))
        if made is None:
            return None, issues
        instance, digest = made, model.spec_hash(made)
    built.made[doc.name] = (labels, written, instance, digest)
    built.instances[instance.name] = instance
    built.hashes[instance.name] = digest
    return instance, issues


def _claim(instance: model.InstanceSpec, built: _Built) -> None:
    """What a built instance claims (unique keys, fixed ports) and refers to, into `built`."""
    built.unique.extend(_unique_claims(instance))
    if instance.vnc is not None and instance.node is not None:
        built.ports.append(instance)
    for d in instance.disks:  # a base must not be a disk some instance writes (rules)
        if d.base_image is not None:
            built.refs.append(("base", d.base_image))
        if not d.read_only:
            built.refs.append(("written", d.path))
    if instance.node is not None:
        built.refs.append(("node", instance.node))
        # socket paths depend on the name's length only: one key per (node, length)
        built.refs.append(("sockets", f"{len(instance.name)}/{instance.node}"))
        if build.needs_kvm(instance):
            built.refs.append(("host-cpu", instance.node))


def _unique_claims(spec: model.InstanceSpec) -> list[tuple[str, str]]:
    return [("mac", nic.mac) for nic in spec.nics] + [("disk", d.path) for d in spec.disks]
