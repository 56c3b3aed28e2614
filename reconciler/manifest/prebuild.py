"""Building instances where their files are parsed, before `assemble`: on both cores, and without keeping
their document bodies.

`assemble` builds every instance from its document merged over the Defaults document's spec, in one
process, after every file is parsed and while every body is still held: half the CPU of a cold load of
a large tree, and most of its memory. An instance's build needs only its own document and the Defaults
context (which document, its spec without nulls, its cuts), so when the context is known before parsing
(the loader finds the Defaults document first, see loader.py), each parse worker builds the instances of
its files at once and keeps the result (`Prebuilt`) in place of the body. `assemble` takes a prebuilt
result only when it was built under the very context it finds itself; the loader checks the same before
calling it, and reparses the plain way if the two differ (a Defaults document the first look missed).
Pure: no I/O.
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler import model
from reconciler.manifest import build, salvage
from reconciler.manifest.parse import ParsedDocument, ParsedFile
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DefaultsContext(Value):
    """What every instance build takes from the Defaults document."""

    document: tuple[str, int] | None  # (path, index) of the Defaults document used; None: none
    spec: dict[str, Any] = field(default_factory=dict)  # as build.clean_defaults gives it
    cuts: tuple[tuple[str | int, ...], ...] = ()
    prune: bool = False


def defaults_context(documents: Sequence[ParsedDocument]) -> DefaultsContext:
    """The Defaults context `assemble` uses for these documents (all of a tree's)."""
    defaults_docs = [d for d in documents if d.kind == "Defaults"]
    doc = defaults_docs[0] if len(defaults_docs) == 1 and defaults_docs[0].cuts is not None else None
    if doc is None:
        return DefaultsContext(None)
    cuts = doc.cuts or ()
    body = salvage.without(doc.body, cuts)["spec"]
    return DefaultsContext((doc.path, doc.index), build.clean_defaults(body), cuts,
                           bool(body.get("prune", False)))


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Prebuilt(Value):
    """An instance document's build, as `assemble` would make it under `context`."""

    context: DefaultsContext
    name_issue: build.Issue | None
    node: str | None = None  # spec.node after the merge, for the reference check
    instance: model.InstanceSpec | None = None
    issues: tuple[build.Issue, ...] = ()


def build_instance_document(doc: ParsedDocument, context: DefaultsContext) -> Prebuilt:
    """`assemble`'s build of one buildable Instance document (doc.cuts is not None)."""
    cuts = doc.cuts or ()
    body = salvage.without(doc.body, cuts)
    name_issue = build.check_name(doc.body["metadata"]["name"])
    if name_issue:
        return Prebuilt(context, name_issue)
    labels = build.labels_of(body["metadata"])
    spec = build.merged_spec(context.spec, body["spec"])
    instance, issues = build.build_instance(doc.name, labels, spec, partial=bool(cuts + context.cuts))
    return Prebuilt(context, None, spec.get("node"), instance, tuple(issues))


def prebuilt_file(parsed: ParsedFile, context: DefaultsContext) -> ParsedFile:
    """`parsed` with each buildable Instance document built, its body dropped (the build holds what is
    needed of it)."""
    if not any(d.kind == "Instance" and d.cuts is not None for d in parsed.documents):
        return parsed
    documents = tuple(
        ParsedDocument(d.path, d.index, d.line, d.column, d.kind, d.name, {}, d.valid, d.cuts,
                       build_instance_document(d, context))
        if d.kind == "Instance" and d.cuts is not None else d
        for d in parsed.documents
    )
    return ParsedFile(parsed.path, documents, parsed.problems, parsed.text)


def reducers() -> Mapping[type, Callable[[Any], tuple[Any, ...]]]:
    """Pickle reductions for the model's classes, much cheaper than the defaults (a slots dataclass
    pickles through dataclasses.fields() per object; an enum unpickles through Enum.__call__): a
    dataclass as its class and its fields in order (unpickled by its __init__), an enum member by name."""
    table: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
    classes: Iterable[Any] = [*vars(model).values(), build.Issue, Prebuilt, DefaultsContext]
    for cls in classes:
        if not isinstance(cls, type):
            continue
        if issubclass(cls, enum.Enum):
            table[cls] = _enum_reducer(cls)
        elif dataclasses.is_dataclass(cls):
            fields = dataclasses.fields(cls)
            if all(f.init and not f.kw_only for f in fields) and len(fields) > 1:
                table[cls] = _dataclass_reducer(cls, operator.attrgetter(*(f.name for f in fields)))
    return table


def _enum_reducer(cls: type[enum.Enum]) -> Callable[[Any], tuple[Any, ...]]:
    return lambda member: (getattr, (cls, member.name))


def _dataclass_reducer(cls: type, values: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    return lambda obj: (cls, values(obj))


def dispatch_table() -> dict[type, Callable[[Any], Any]]:
    table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    table.update(reducers())
    return table
