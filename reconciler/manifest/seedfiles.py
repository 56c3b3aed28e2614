"""The cloud-init parts a manifest names by file (`userDataFile`, ...), read into the model: the I/O edge.

`build` checks the path as written (relative, no `..`); here each file is read, relative to the directory
of the instance's manifest file, after checking that its real path (symlinks followed) is still inside
that directory. The text goes into the spec, so a changed file is a changed spec (a seed change the plan
names) and the executor never reads manifest-side files. A file that cannot be used is a problem naming
the field, like any other manifest problem: nothing is planned from a tree with one.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from reconciler.manifest.problems import Problem, show
from reconciler.model import DesiredState, FieldRef, Kind, SourceRef

MAX_BYTES = 1024 * 1024  # as the schema's maxLength of the inline parts
_SPELLING = {"user_data": "userDataFile", "meta_data": "metaDataFile", "network_config": "networkConfigFile"}


def resolve(desired: DesiredState) -> tuple[DesiredState, tuple[Problem, ...]]:
    """`desired` with every cloudInit file part read in, or the problems of the ones that cannot be."""
    resolved, problems, _ = _resolve(desired, desired.instances.keys())
    return resolved, problems


class Resolver:
    """`resolve` for a caller that asks again after small changes (the watch daemon): it remembers which
    instances have file parts, so a pass looks at those and at the ones it is told changed, not at every
    instance of the tree. Every file part is still read on every call: a changed file is a changed spec."""

    def __init__(self) -> None:
        self._with_files: set[str] = set()

    def resolve(self, desired: DesiredState,
                changed: Collection[str] | None) -> tuple[DesiredState, tuple[Problem, ...]]:
        """As `resolve`; `changed`: the instances that may have been rebuilt since the last call (None:
        unknown, so all are looked at)."""
        names = desired.instances.keys() if changed is None else sorted(self._with_files.union(changed))
        resolved, problems, self._with_files = _resolve(desired, names)
        return resolved, problems


def _resolve(desired: DesiredState,
             names: Iterable[str]) -> tuple[DesiredState, tuple[Problem, ...], set[str]]:
    updated = {}
    failed: list[tuple[str, str, str]] = []  # (instance, field, message)
    with_files: set[str] = set()
    for name in names:
        spec = desired.instances.get(name)
        ci = spec.cloud_init if spec is not None else None
        if spec is None or ci is None or not ci.files:
            continue
        with_files.add(name)
        source = desired.sources.get(f"{Kind.INSTANCE.value}/{name}")
        base = os.path.dirname(os.path.abspath(source.path if source is not None else "."))
        texts = {}
        for part, relative in ci.files:
            text, error = read_inside(base, relative, _SPELLING[part])
            if error:
                failed.append((name, _SPELLING[part], error))
            else:
                texts[part] = text
        updated[name] = replace(spec, cloud_init=replace(ci, **texts))
    if failed:
        return desired, _problems(failed, desired.sources), with_files
    if not updated:
        return desired, (), with_files
    instances = {**desired.instances, **updated}
    hashes = dict(desired.spec_hashes)  # of the unread specs: those read in are hashed again
    for name in updated:
        hashes.pop(name, None)
    return replace(desired, instances=instances, spec_hashes=hashes), (), with_files


def read_inside(base: str, relative: str, what: str) -> tuple[str, str]:
    """(text, "") of `relative` under `base`, or ("", the one-line reason it cannot be used)."""
    root = os.path.realpath(base)
    target = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([root, target]) != root:
        return "", f"{what} {show(relative)} leads outside the manifest's directory ({target}); refused"
    try:
        with open(target, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return "", f"{what} {show(relative)} does not exist ({target})"
    except OSError as err:
        return "", f"{what} {show(relative)}: {err.strerror or err} ({target})"
    if len(data) > MAX_BYTES:
        return "", f"{what} {show(relative)} is over {MAX_BYTES} bytes"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return "", f"{what} {show(relative)} is not UTF-8 text"


def _problems(failed: list[tuple[str, str, str]], sources: Mapping[str, SourceRef]) -> tuple[Problem, ...]:
    from reconciler.manifest import origin, read_file

    refs = {FieldRef(Kind.INSTANCE, name, ("spec", "cloudInit", field)) for name, field, _ in failed}
    texts = {}
    for path in origin.files_to_read(refs, sources):
        data, _ = read_file(path)
        texts[path] = data.decode("utf-8-sig", errors="replace") if data is not None else ""
    where = origin.locate_fields(refs, sources, texts)
    out = []
    for name, field, message in failed:
        at = where.get(FieldRef(Kind.INSTANCE, name, ("spec", "cloudInit", field)))
        path = at.path if at is not None else sources.get(f"Instance/{name}", SourceRef("?")).path
        out.append(Problem(path, at.line if at else 0, at.column if at else 0, "Instance", name,
                           f"spec.cloudInit.{field}", message))
    return tuple(sorted(out, key=Problem.sort_key))
