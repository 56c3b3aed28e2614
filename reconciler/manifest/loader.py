"""The whole pipeline for callers that just want the result: find files, parse each, assemble."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence

from reconciler.manifest import seedfiles
from reconciler.manifest.assemble import LoadResult, assemble
from reconciler.manifest.discovery import discover
from reconciler.manifest.parse import parse_paths
from reconciler.manifest.problems import Problem

DEFAULT_PATHS = ("manifests",)


def load(paths: Sequence[str] = DEFAULT_PATHS) -> LoadResult:
    """Load every manifest under `paths` (files or directories). Never raises for bad input."""
    found = discover(paths)
    with no_cyclic_gc():
        result = assemble(parse_paths(found.files))
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

