"""Where a field of a declared object is written: in the object's own document, or in the Defaults
document it inherits the field from.

Loading keeps only where each document begins (`DesiredState.sources`, "Kind/name" -> SourceRef). A
message about a field that comes later (the plan's host checks, planner.needs) finds the field's line the
way validate positions its problems: compose the file again (once per file) and walk the field path.
Pure: the caller reads the files, only when there is something to report, and passes their text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from yaml.nodes import Node

from reconciler.manifest.positions import compose_documents, locate_exact
from reconciler.model import FieldRef, Kind, SourceRef


def files_to_read(refs: Iterable[FieldRef], sources: Mapping[str, SourceRef]) -> tuple[str, ...]:
    """The manifest files `locate_fields` needs: the objects' own and the Defaults document's."""
    paths = {sources[key].path for key in {f"{r.kind}/{r.name}" for r in refs} if key in sources}
    defaults = _defaults(sources)
    if defaults is not None:
        paths.add(defaults.path)
    return tuple(sorted(paths))


def locate_fields(
    refs: Iterable[FieldRef], sources: Mapping[str, SourceRef], texts: Mapping[str, str]
) -> dict[FieldRef, SourceRef]:
    """Where each field is written. An instance's field that its own document does not write comes from
    the Defaults document when that one writes it; a field written nowhere (a default value) is placed at
    the start of its object's document. Objects with no known source are left out."""
    roots = _Roots(texts)
    defaults = _defaults(sources)
    out: dict[FieldRef, SourceRef] = {}
    for ref in refs:
        own = sources.get(f"{ref.kind}/{ref.name}")
        if own is None:
            continue
        candidates = [own, defaults] if ref.kind is Kind.INSTANCE and defaults is not None else [own]
        found = next((at for doc in candidates if (at := roots.find(doc, ref.path)) is not None), None)
        out[ref] = found or own
    return out


def _defaults(sources: Mapping[str, SourceRef]) -> SourceRef | None:
    return next((src for key, src in sorted(sources.items()) if key.startswith("Defaults/")), None)


class _Roots:
    """Node trees of the files' documents, composed at most once per file, found by where they begin."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        self._texts = texts
        self._docs: dict[str, dict[tuple[int, int], Node]] = {}

    def find(self, doc: SourceRef, path: tuple[str | int, ...]) -> SourceRef | None:
        docs = self._docs.get(doc.path)
        if docs is None:
            roots = compose_documents(self._texts.get(doc.path, ""))
            docs = self._docs[doc.path] = {
                (r.start_mark.line + 1, r.start_mark.column + 1): r for r in roots if r is not None
            }
        root = docs.get((doc.line, doc.column))
        at = locate_exact(root, path) if root is not None else None
        return SourceRef(doc.path, *at) if at is not None else None
