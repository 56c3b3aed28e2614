"""The loader's contract, checked after every fuzzed input: a DesiredState or one-line problems.

`parse_file` + `assemble` must never raise for bad input; `desired` is None exactly when there are
problems; each problem prints as exactly one line that starts with the path of a file we gave it (so a
user can find it); and the same input gives the same result (no hidden state, no ordering by hash).
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.manifest import LoadResult, assemble, parse_file


def load_bytes(files: Mapping[str, bytes]) -> LoadResult:
    """Parse and assemble in-memory files, asserting the contract; returns the result."""
    result = assemble([parse_file(path, data) for path, data in files.items()])
    check_result(result, files.keys())
    return result


def check_result(result: LoadResult, paths: object) -> None:
    names = set(paths)  # type: ignore[call-overload]
    assert (result.desired is None) == bool(result.problems), result
    for problem in result.problems:
        line = str(problem)
        assert "\n" not in line and "\r" not in line, repr(line)
        assert line.isprintable(), repr(line)
        assert problem.path in names, (problem.path, names)
        assert line.startswith(problem.path), line
        assert len(line) <= 8192
    if result.desired is not None:
        assert set(result.desired.instances) <= {s.split("/", 1)[1] for s in result.desired.sources}
