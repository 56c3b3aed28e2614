"""The whole pipeline for callers that just want the result: find files, parse each, assemble."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator, Sequence

from reconciler.manifest import prebuild, seedfiles
from reconciler.manifest.assemble import LoadResult, assemble
from reconciler.manifest.discovery import discover
from reconciler.manifest.parse import ParsedDocument, ParsedFile, parse_file, parse_paths, read_file
from reconciler.manifest.problems import Problem

DEFAULT_PATHS = ("manifests",)


def load(paths: Sequence[str] = DEFAULT_PATHS) -> LoadResult:
    """Load every manifest under `paths` (files or directories). Never raises for bad input."""
    found = discover(paths)
    with no_cyclic_gc():
        result = assemble(_parse_and_build(found.files))
    if result.desired is not None:
        desired, seed_problems = seedfiles.resolve(result.desired)
        result = LoadResult(None if seed_problems else desired, seed_problems, result.files, result.warnings)
    extra = list(found.problems)
    if not found.files and not found.problems:
        extra = [Problem(p, message="no .yaml or .yml files found") for p in paths]
    if not extra:
        return result
    problems = sorted({*result.problems, *extra}, key=Problem.sort_key)
    return LoadResult(None, tuple(problems), result.files, result.warnings)


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Loading builds millions of small objects and keeps them: the cyclic collector would scan the
    growing heap again and again for cycles there are none of (half the time of a 50,000-instance load,
    and a third of unpickling the forked parser's half). Reference counting frees what is dropped all the
    same; the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()



def _parse_and_build(paths: Sequence[str]) -> list[ParsedFile]:
    """parse_paths(paths), with each Instance built by the worker that parsed it (prebuild.py) under the
    Defaults context found first: in the files whose bytes name Defaults at all. Should the whole tree
    give another context (a Defaults document spelled with escapes), the files are parsed again the
    plain way, so the result is always `assemble(parse_paths(paths))`'s."""
    first: list[ParsedDocument] = []
    for path in paths:
        data, _ = read_file(path)
        if data is not None and b"Defaults" in data:
            first += parse_file(path, data).documents
    context = prebuild.defaults_context(first)
    del first

    files = parse_paths(paths, functools.partial(prebuild.prebuilt_file, context=context),
                        prebuild.dispatch_table())
    if prebuild.defaults_context([d for f in files for d in f.documents]) != context:
        del files
        return parse_paths(paths)
    return files
