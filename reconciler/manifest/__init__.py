"""Manifests: YAML files -> validated, normalized `DesiredState`, or every problem in one pass.

Stable API (other modules and the watch daemon rely on it):

- `load(paths) -> LoadResult`: discover .yaml/.yml files under `paths`, parse, check, build.
  `result.desired` is a `model.DesiredState`, or None exactly when `result.problems` is not empty.
  `result.problems` is a sorted tuple of `Problem` (frozen: path, line, column, kind, name, field,
  message); `str(problem)` is one line: `file.yaml:12:5: instance web1: spec.memory: '12X' is not ...`.
  `result.warnings` (same type, severity warning) never make `desired` None.
- `parse_file(path, data: bytes) -> ParsedFile`: the per-file work (decode, YAML, schema), pure.
- `assemble(parsed_files) -> LoadResult`: the cross-file work (unique names, references, Defaults
  merge, building model objects), pure. A daemon re-parses only changed files and re-assembles.
- `discover(paths) -> Discovery` and `read_file(path)`: the I/O edge, separate so it can be replaced.

Pipeline modules: discovery (which files), yamlfast (plain block YAML, fast) and yamlsafe (strict YAML
on libyaml, everything else), yamlcore (the scalar rules both share), schema (JSON Schema check and
wording) with schemacheck (its fast valid/invalid decision), parse (one file), build (one object ->
model), prebuild (the loader's Instance builds in the parse workers), rules (across objects), assemble
(all), positions (line/column on demand), problems (diagnostics).
"""

from reconciler.manifest.assemble import LoadResult, assemble
from reconciler.manifest.discovery import Discovery, discover
from reconciler.manifest.loader import DEFAULT_PATHS, load
from reconciler.manifest.parse import ParsedDocument, ParsedFile, parse_file, parse_paths, read_file
from reconciler.manifest.problems import Problem

__all__ = [
    "DEFAULT_PATHS",
    "Discovery",
    "LoadResult",
    "ParsedDocument",
    "ParsedFile",
    "Problem",
    "assemble",
    "discover",
    "load",
    "parse_file",
    "parse_paths",
    "read_file",
]
