"""Per-file work: bytes -> YAML documents -> schema-checked documents, with positioned problems.

`parse_file` is pure (bytes in, value out) and needs nothing from other files, so a watch daemon can
re-parse only the files that changed and keep the other `ParsedFile`s. Everything that needs more than
one file (unique names, node references, Defaults) happens later, in `assemble`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.manifest import salvage, schema, yamlcore, yamlfast
from reconciler.manifest.positions import Locator
from reconciler.manifest.problems import Problem, field_path
from reconciler.values import Value

MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ParsedDocument(Value):
    """One document that passed YAML and schema checks (`valid`) or did not, with its identity."""

    path: str
    index: int  # position of the document in its file
    line: int  # 1-based line of the document's first node
    column: int
    kind: str  # "" when the document has no usable kind
    name: str  # "" when the document has no usable name
    body: dict[str, Any] = field(hash=False, compare=False)  # {} when not a mapping
    valid: bool = False
    # Schema-invalid but still buildable after cutting these fields out (see salvage.py); None: not buildable
    cuts: tuple[tuple[str | int, ...], ...] | None = None
    # An Instance built where it was parsed (prebuild.Prebuilt; its body is then {}), or None
    built: Any = field(default=None, hash=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ParsedFile(Value):
    """One manifest file: its documents and the problems found in it alone."""

    path: str
    documents: tuple[ParsedDocument, ...]
    problems: tuple[Problem, ...]
    text: str = field(default="", repr=False, compare=False)  # kept to position later problems

    def locator(self) -> Locator:
        return Locator(self.text)


_BOM = b"\xef\xbb\xbf"


def decode(path: str, data: bytes) -> tuple[str | None, Problem | None]:
    """The file's text, or why it is not a text file we accept. A leading UTF-8 signature (BOM, which some
    editors write) is not part of the text, and positions are counted without it, as the YAML reader's."""
    if len(data) > MAX_FILE_BYTES:
        return None, Problem(path, message=f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    if b"\0" in data:
        offset = data.index(b"\0")
        line = data.count(b"\n", 0, offset) + 1
        return None, Problem(
            path,
            line,
            offset - (data.rfind(b"\n", 0, offset) + 1) + 1,
            message="binary file (contains a NUL byte), not YAML",
        )
    try:
        return data.decode("utf-8"), None  # not "utf-8-sig": its codec is one more import, and its errors
    except UnicodeDecodeError as err:  # count from after the BOM, which made the column and byte wrong
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return None, Problem(path, line, column, message=f"not UTF-8 text (byte 0x{data[err.start]:02x})")


def parse_file(path: str, data: bytes) -> ParsedFile:
    """Parse and schema-check one file's bytes. Never raises for bad input."""
    text, problem = decode(path, data)
    if text is None:
        return ParsedFile(path, (), (problem,) if problem else ())
    raw_docs, fatal = yamlfast.load_documents(text)  # the strict reader for whatever it leaves
    problems: list[Problem] = []
    documents: list[ParsedDocument] = []
    locator = Locator(text)
    for raw in raw_docs:
        doc, doc_problems = _check_document(path, raw, locator)
        documents.append(doc)
        problems.extend(doc_problems)
    if fatal is not None:
        issue = fatal.issue
        problems.append(
            Problem(path, issue.line + 1, issue.column + 1, message=f"invalid YAML: {issue.message}")
        )
    elif not raw_docs:
        problems.append(Problem(path, message="no YAML documents in the file"))
    return ParsedFile(path, tuple(documents), tuple(problems), text)


def _identity(data: Any) -> tuple[str, str]:
    """(kind, name) of a document, as far as they are usable for messages."""
    if not isinstance(data, dict):
        return "", ""
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return (
        kind if kind in ("Instance", "Node", "Defaults") else "",
        name if isinstance(name, str) and len(name) <= 63 and name.isprintable() else "",
    )


def _check_document(
    path: str, raw: yamlcore.YamlDocument, locator: Locator
) -> tuple[ParsedDocument, list[Problem]]:
    kind, name = _identity(raw.data)
    line, column = raw.line + 1, raw.column + 1
    problems = [Problem(path, i.line + 1, i.column + 1, kind, name, message=i.message) for i in raw.issues]
    cuts: tuple[tuple[str | int, ...], ...] | None = None
    body: dict[str, Any] = raw.data if isinstance(raw.data, dict) else {}
    if raw.data is None and not problems:
        problems.append(Problem(path, line, column, message="empty document"))
    elif not isinstance(raw.data, dict) and not problems:
        problems.append(Problem(path, line, column, message=_NOT_A_MAPPING))
    elif isinstance(raw.data, dict):
        yaml_lines = {p.line for p in problems}  # a refused value (bad tag) is not reported twice
        schema_issues = schema.validate(raw.data)
        for issue in schema_issues:
            at_line, at_column = locator.find(raw.index, issue.path)
            if at_line not in yaml_lines:
                problems.append(
                    Problem(path, at_line, at_column, kind, name, field_path(issue.path), issue.message)
                )
        if not raw.issues:  # build from what the YAML says only when it said it unambiguously
            cuts = _cuts(raw.data, schema_issues)
    document = ParsedDocument(
        path, raw.index, line, column, kind, name, body, valid=not problems, cuts=() if not problems else cuts
    )
    return document, problems


_NOT_A_MAPPING = "document is not a mapping (expected apiVersion, kind, metadata, spec)"


def _cuts(
    data: dict[str, Any], issues: Sequence[schema.SchemaIssue]
) -> tuple[tuple[str | int, ...], ...] | None:
    """Where to cut a schema-invalid document so the rest can still be built (see salvage.py)."""
    if not issues:
        return ()
    cuts = salvage.cut_points(
        [i.path for i in issues if not i.missing], [i.path for i in issues if i.missing]
    )
    return salvage.settle(data, cuts, schema.validate) if cuts else cuts


def read_file(path: str) -> tuple[bytes | None, Problem | None]:
    """The file's bytes (at most MAX_FILE_BYTES + 1 of them), or why it cannot be read. Never blocks on
    a FIFO or device: only regular files are read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as err:
        return None, Problem(path, message=f"cannot read: {getattr(err, 'strerror', None) or err}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, Problem(path, message="not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(MAX_FILE_BYTES + 1), None
    except OSError as err:
        return None, Problem(path, message=f"cannot read: {err.strerror or err}")
    finally:
        os.close(fd)


FANOUT_MIN_BYTES = 1024 * 1024  # about 1,500 instances: below that, forking costs more than it saves


def parse_paths(
    paths: Sequence[str],
    finish: Callable[[ParsedFile], ParsedFile] | None = None,
    dispatch_table: Mapping[type, Callable[[Any], Any]] | None = None,
) -> list[ParsedFile]:
    """Read and parse each file (on two cores for large trees); an unreadable one becomes a ParsedFile
    holding only its problem. `finish` is more work on each ParsedFile, done by the same worker (the
    loader's builds); `dispatch_table`, pickle's reductions for what it adds."""
    from reconciler.manifest import fanout

    def work(path: str) -> ParsedFile:
        parsed = read_and_parse(path)
        return parsed if finish is None else finish(parsed)

    # Many files are enough work whatever their sizes (and stat() on each would cost).
    sizes = [FANOUT_MIN_BYTES] * len(paths) if len(paths) >= 1000 else [_size(path) for path in paths]
    return fanout.map_in_two(paths, sizes, work, _encode, _decode, FANOUT_MIN_BYTES, dispatch_table)


def read_and_parse(path: str) -> ParsedFile:
    data, problem = read_file(path)
    if data is None:
        return ParsedFile(path, (), (problem,) if problem else ())
    return parse_file(path, data)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except (OSError, ValueError):
        return 0


def _encode(parsed: ParsedFile) -> object:
    docs = [(d.index, d.line, d.column, d.kind, d.name, d.body, d.valid, d.cuts, d.built)
            for d in parsed.documents]
    problems = [(p.line, p.column, p.kind, p.name, p.field, p.message, p.path) for p in parsed.problems]
    return (parsed.path, parsed.text, docs, problems)


def _decode(encoded: Any) -> ParsedFile:
    path, text, docs, problems = encoded
    return ParsedFile(
        path,
        tuple(ParsedDocument(path, *d) for d in docs),
        tuple(Problem(p[6], *p[:6]) for p in problems),
        text,
    )
