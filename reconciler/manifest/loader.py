"""The whole pipeline for callers that just want the result: find files, parse each, assemble."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.manifest import seedfiles
from reconciler.manifest.assemble import LoadResult, assemble
from reconciler.manifest.discovery import discover
from reconciler.manifest.parse import parse_paths
from reconciler.manifest.problems import Problem

DEFAULT_PATHS = ("manifests",)


def load(paths: Sequence[str] = DEFAULT_PATHS) -> LoadResult:
    """Load every manifest under `paths` (files or directories). Never raises for bad input."""
    found = discover(paths)
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
