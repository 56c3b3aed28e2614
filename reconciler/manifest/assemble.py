"""Cross-file work: parsed files -> one DesiredState (or every problem that prevents it).

Runs the rules that need all documents at once (unique names, one Defaults, references, shared
resources), merges Defaults under each instance, builds the model objects and records where each object
was declared. Pure: it works on `ParsedFile` values and does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler import model
from reconciler.manifest import build, prebuild, rules, salvage
from reconciler.manifest.parse import ParsedDocument, ParsedFile
from reconciler.manifest.positions import Locator
from reconciler.manifest.problems import Problem, Severity, field_path
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class LoadResult(Value):
    """`desired` is None exactly when `problems` is not empty; `warnings` never make it None."""

    desired: model.DesiredState | None
    problems: tuple[Problem, ...]
    files: tuple[str, ...] = ()  # the manifest files that were read
    warnings: tuple[Problem, ...] = ()  # Severity.WARNING, sorted

    @property
    def ok(self) -> bool:
        return self.desired is not None


class _Positions:
    """Turns (document, field path) into positioned Problems, composing each file at most once."""

    def __init__(self, files: Iterable[ParsedFile]) -> None:
        self._text = {f.path: f.text for f in files}
        self._locators: dict[str, Locator] = {}

    def where(self, doc: ParsedDocument) -> str:
        return f"{doc.path}:{doc.line}:{doc.column}"

    def problem(self, doc: ParsedDocument, path: build.FieldPath, message: str,
                severity: Severity = Severity.ERROR) -> Problem:
        locator = self._locators.get(doc.path)
        if locator is None:
            locator = self._locators[doc.path] = Locator(self._text.get(doc.path, ""))
        line, column = locator.find(doc.index, path)
        if not line:
            line, column = doc.line, doc.column
        return Problem(doc.path, line, column, doc.kind, doc.name, field_path(path), message, severity)


def assemble(parsed_files: Sequence[ParsedFile]) -> LoadResult:
    """Check everything across files and build the DesiredState. Never raises for bad input."""
    files = sorted(parsed_files, key=lambda f: f.path)
    problems: list[Problem] = [p for f in files for p in f.problems]
    positions = _Positions(files)
    documents = [d for f in files for d in f.documents]
    violations: list[rules.Violation] = []
    violations += rules.unique_names(documents, positions.where)
    duplicate_docs = {id(v.document) for v in violations}
    defaults_docs = [d for d in documents if d.kind == "Defaults"]
    violations += rules.single_defaults(defaults_docs, positions.where)

    buildable = [d for d in documents if d.cuts is not None and id(d) not in duplicate_docs]
    context = prebuild.defaults_context(documents)
    prune = context.prune

    nodes: dict[str, tuple[model.NodeSpec, ParsedDocument]] = {}
    instances: dict[str, tuple[model.InstanceSpec, ParsedDocument]] = {}
    references: list[tuple[str | None, ParsedDocument]] = []
    same_context: dict[int, bool] = {}  # id(a prebuilt context) -> it is `context`
    for doc in buildable:
        if doc.kind not in ("Node", "Instance"):
            continue
        cuts = doc.cuts or ()
        if doc.kind == "Node":
            body = salvage.without(doc.body, cuts)
            name_issue = build.check_name(doc.body["metadata"]["name"])
            if name_issue:
                violations.append(rules.Violation(doc, name_issue.path, name_issue.message))
                continue
            labels = build.labels_of(body["metadata"])
            node, issues = build.build_node(doc.name, labels, body["spec"], doc.path)
            if node is not None:
                nodes[doc.name] = (node, doc)
            violations += [
                rules.Violation(doc, i.path, i.message) for i in issues if not salvage.inside(i.path, cuts)
            ]
            continue
        built = doc.built
        if built is not None:
            known = same_context.get(id(built.context))
            if known is None:
                known = same_context[id(built.context)] = built.context == context
            if not known:  # the loader checks this before: a prebuilt document has no body left
                raise ValueError(f"{doc.path}: instance built under another Defaults context")
        else:
            built = prebuild.build_instance_document(doc, context)
        if built.name_issue:
            violations.append(rules.Violation(doc, built.name_issue.path, built.name_issue.message))
            continue
        references.append((built.node, doc))
        if built.instance is not None:
            instances[doc.name] = (built.instance, doc)
        if built.issues:  # (most have none: a 50,000-instance tree makes no list per document)
            cuts += context.cuts
            violations += [rules.Violation(doc, i.path, i.message)
                           for i in built.issues if not salvage.inside(i.path, cuts)]

    declared_nodes = {d.name for d in documents if d.kind == "Node" and d.name}
    violations += rules.node_references(references, declared_nodes)
    violations += rules.unique_macs(instances, positions.where)
    violations += rules.unique_disks(instances, positions.where)
    violations += rules.written_bases(instances)
    node_specs = {n: spec for n, (spec, _) in nodes.items()}
    violations += rules.unique_fixed_ports(instances, node_specs, positions.where)
    violations += rules.host_cpu_needs_kvm(instances, node_specs)
    violations += rules.socket_paths(instances, node_specs)
    violations += rules.node_resources(nodes, positions.where)

    problems += [positions.problem(v.document, v.path, v.message) for v in violations]
    warnings = tuple(sorted(
        (positions.problem(v.document, v.path, v.message, Severity.WARNING)
         for v in rules.open_vnc(instances)),
        key=Problem.sort_key,
    ))
    paths = tuple(f.path for f in files)
    if problems:
        return LoadResult(None, tuple(sorted(set(problems), key=Problem.sort_key)), paths, warnings)
    sources = {
        f"{doc.kind}/{doc.name}": model.SourceRef(doc.path, doc.line, doc.column)
        for doc in documents
        if doc.kind and doc.name
    }
    desired = model.DesiredState(
        instances={name: spec for name, (spec, _) in sorted(instances.items())},
        nodes={name: spec for name, (spec, _) in sorted(nodes.items())},
        prune=prune,
        sources=sources,
    )
    return LoadResult(desired, (), paths, warnings)
