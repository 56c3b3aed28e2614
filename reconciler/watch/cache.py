"""The daemon's manifest cache: re-parse only what changed, and let a broken file keep its last good version.

`plan` and `apply` are all-or-nothing: one bad file and nothing happens. A daemon cannot work that way,
since a half-written file during a `git pull`, or a typo pushed by someone, would stop every VM's
reconciliation. The finer rule here, per file: the last good parse of a file stands in for a broken one,
so the instances it declared keep their last good spec, while the rest of the tree reconciles. Pruning
is suspended while any file is broken (a file that does not parse would otherwise look like deleted
instances). The errors are kept with the time they were first seen, for the log, `status` and metrics.

A refresh walks the roots (`manifest.discover`) and compares each file's (mtime_ns, size, inode) with
what it saw; only files whose stamp moved are read, and only those whose content hash moved are parsed.
When the daemon knows which files its events named, the refresh looks at those alone (a walk and a stat
of 10,000 files cost ~45 ms); the periodic resync walks everything again.
Timestamps are coarse (a few ms), so a file modified within `RACY_SECONDS` of being read is re-hashed on
every refresh until its stamp is old enough to be trusted (git's "racy clean" rule). The cross-file step
is incremental (`watch.assembly`); when it finds a rule broken, the full `manifest.assemble` names the
problems, the files they are in that changed since the last good tree are held back to their last good
version (or left out, if new), and assembly is tried again.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.manifest import (
    Discovery,
    ParsedFile,
    Problem,
    assemble,
    discover,
    parse_file,
    read_file,
    seedfiles,
)
from reconciler.manifest.discovery import SUFFIXES
from reconciler.model import DesiredState
from reconciler.values import Value
from reconciler.watch.assembly import Assembly

RACY_SECONDS = 2.0
MAX_PROBLEMS_PER_FILE = 20


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Stamp(Value):
    """A file's stat stamp: unchanged stamp, unchanged content (unless racy)."""

    mtime_ns: int
    size: int
    ino: int


@dataclass(slots=True)
class _Entry:
    """One cached file: its stamp, digest and parse."""

    stamp: Stamp | None
    digest: bytes | None
    parsed: ParsedFile
    racy: bool = False  # the stamp is too recent to prove the content unchanged


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class FileError(Value):
    """A manifest file that cannot be used as it is now."""

    path: str
    problems: tuple[str, ...]  # one line each, as `reconciler validate` prints them
    held: bool  # True: its last good version stands in; False: it contributes nothing
    since: float  # epoch seconds when this file was first seen broken

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "problems": list(self.problems), "held": self.held, "since": self.since}


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Snapshot(Value):
    """The desired state as the daemon should use it now."""

    desired: DesiredState | None  # None only when no consistent tree could be made at all
    errors: tuple[FileError, ...] = ()
    files: int = 0
    reparsed: tuple[str, ...] = ()  # files parsed by this refresh
    rebuilt: int = 0  # files whose objects were rebuilt
    blocked: tuple[str, ...] = ()  # problems when `desired` is None

    @property
    def degraded(self) -> bool:
        """Some file is broken: its instances keep their last good spec and pruning is suspended."""
        return bool(self.errors)


_Outcome = tuple[DesiredState | None, dict[str, FileError], int, tuple[str, ...]]


@dataclass(slots=True)
class ManifestCache:
    """Parsed manifest files, re-read only when they change."""

    roots: Sequence[str]
    clock: Callable[[], float] = time.time
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _good: dict[str, ParsedFile] = field(default_factory=dict)  # the last tree that assembled cleanly
    _since: dict[str, float] = field(default_factory=dict)
    _assembly: Assembly = field(default_factory=Assembly)
    _listing: Discovery | None = None  # the manifest files as of the last refresh
    _real_roots: dict[str, str] = field(default_factory=dict)
    _listed: frozenset[str] = frozenset()  # `_listing`'s files
    _fresh: dict[str, ParsedFile] = field(default_factory=dict)  # each listed file as last read
    _racy: set[str] = field(default_factory=set)  # files whose stamp is too recent to trust
    _settled: _Outcome | None = None  # the last refresh's outcome, when it assembled a tree
    _seeds: seedfiles.Resolver = field(default_factory=seedfiles.Resolver)

    def refresh(self, changed: Collection[str] | None = None) -> Snapshot:
        """The desired state now. `changed`: the paths that file events named since the last refresh
        (None: unknown, so walk the tree and stat every file; the periodic resync always does)."""
        last_listing = self._listing
        found, hinted = self._listing_for(changed)
        reparsed: list[str] = []
        if hinted is not None and found is last_listing and self._settled is not None:
            outcome = self._refresh_some(hinted | self._racy, reparsed)  # the same files: those named
        else:
            outcome = self._refresh_all(found, hinted, reparsed)
        desired, by_path, rebuilt, blocked = outcome
        errors = by_path.values()
        now = self.clock()
        self._since = {e.path: self._since.get(e.path, now) for e in errors}
        stamped = tuple(FileError(e.path, e.problems, e.held, self._since[e.path])
                        for e in sorted(errors, key=lambda e: e.path))
        return Snapshot(desired, stamped, len(found.files), tuple(reparsed), rebuilt, blocked)

    def _refresh_all(self, found: Discovery, hinted: frozenset[str] | None, reparsed: list[str]) -> _Outcome:
        fresh: dict[str, ParsedFile] = {}
        for path in found.files:
            fresh[path] = self._current(path, reparsed, trusted=hinted is not None and path not in hinted)
        for path in [p for p in self._entries if p not in fresh]:
            del self._entries[path]
            self._racy.discard(path)
        for problem in found.problems:  # broken symlinks, unreadable directories, missing roots
            fresh[problem.path] = ParsedFile(problem.path, (), (problem,))
        self._fresh = fresh
        return self._resolve(fresh)

    def _refresh_some(self, paths: Collection[str], reparsed: list[str]) -> _Outcome:
        """The refresh of an unchanged listing where only `paths` may have changed: the cost is theirs,
        not the tree's. Files whose version stays are not looked at; a file read again but unchanged
        (the same content) keeps its ParsedFile, so nothing downstream moves for it."""
        settled = self._settled
        assert settled is not None
        moved: dict[str, ParsedFile] = {}
        for path in paths:
            before = self._fresh.get(path)
            if before is None:
                continue  # not listed (created and gone again, since): not a manifest now
            now = self._current(path, reparsed)
            if now is not before:
                moved[path] = now
        if not moved:
            return settled[0], settled[1], 0, ()
        self._fresh.update(moved)
        if any(not self._fresh[path].problems for path in settled[1] if path in self._fresh):
            return self._resolve(self._fresh)  # a file held back by the rest of the tree: try it again
        candidate = dict(self._good)
        errors = {path: e for path, e in settled[1].items() if path not in moved}
        for path, parsed in moved.items():
            self._take(path, parsed, candidate, errors)
        rebuilt = self._assembly.update(candidate, only=moved.keys())
        return self._settle(candidate, errors, rebuilt, moved.keys())

    # --- listing -------------------------------------------------------------------------------------

    def _listing_for(self, changed: Collection[str] | None) -> tuple[Discovery, frozenset[str] | None]:
        """The manifest files, and the ones to look at again (None: all of them).

        With the event paths, the last walk is updated instead of walking 10,000 files again: a named
        YAML file that exists now is in, one that is gone is out. Anything the last walk could not vouch
        for that way (symlinks, problems, a path that may be a directory, a path under two roots) walks.
        """
        last = self._listing
        if changed is not None and last is not None and not last.symlinks and not last.problems:
            keys = self._keys(changed)
            if keys is not None:
                listing = self._updated(last, keys)
                if listing is not None:
                    if listing is not last:
                        self._listing, self._listed = listing, frozenset(listing.files)
                    return listing, frozenset(keys)
        self._listing = discover(self.roots)
        self._listed = frozenset(self._listing.files)
        self._real_roots = {root: os.path.realpath(root) for root in self.roots}
        return self._listing, None

    def _keys(self, changed: Collection[str]) -> list[str] | None:
        keys = []
        for path in changed:
            below = [(root, path[len(real) + 1:] if path != real else "")
                     for root, real in self._real_roots.items()
                     if path == real or path.startswith(real + os.sep)]
            if len(below) != 1:
                return None  # outside the roots, or under two of them
            root, rel = below[0]
            if any(part.startswith(".") for part in rel.split(os.sep)):
                continue  # hidden: never a manifest, whatever happens to it
            key = os.path.join(root, rel) if rel else root
            if not key.endswith(SUFFIXES):
                return None  # perhaps a directory
            keys.append(key)
        return keys

    def _updated(self, last: Discovery, keys: list[str]) -> Discovery | None:
        listed = self._listed
        added, gone = set(), set()
        for key in keys:
            try:
                st = os.lstat(key)
            except FileNotFoundError:
                if key in listed:
                    gone.add(key)
                continue
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode):
                return None  # a symlink or a directory named like a manifest: the walk decides
            if key not in listed:
                added.add(key)
        if not added and not gone:
            return last  # an edit: the listing stands (no copy of 10,000 paths)
        files = (listed - gone) | added
        order = {root: i for i, root in enumerate(self.roots)}

        def position(path: str) -> tuple[int, list[str]]:
            root = next(r for r in self.roots if path == r or path.startswith(r.rstrip(os.sep) + os.sep))
            return order[root], path.split(os.sep)

        return Discovery(tuple(sorted(files, key=position)), (), False)

    # --- reading -------------------------------------------------------------------------------------

    def _current(self, path: str, reparsed: list[str], *, trusted: bool = False) -> ParsedFile:
        """`trusted`: no event named the file since it was last read, so its entry stands as it is."""
        entry = self._entries.get(path)
        if trusted and entry is not None and not entry.racy:
            return entry.parsed
        stamp = _stamp(path)
        if entry is not None and stamp is not None and entry.stamp == stamp and not entry.racy:
            return entry.parsed
        read_at = time.time()  # compared with the file system's clock, whatever `clock` is
        data, problem = read_file(path)
        if data is None:
            parsed = ParsedFile(path, (), (problem or Problem(path, message="cannot read"),))
            self._entries[path] = _Entry(stamp, None, parsed)
            return parsed
        digest = hashlib.blake2b(data, digest_size=16).digest()
        racy = stamp is None or read_at - stamp.mtime_ns / 1e9 < RACY_SECONDS
        if racy:
            self._racy.add(path)
        else:
            self._racy.discard(path)
        if entry is not None and entry.digest == digest:
            entry.stamp, entry.racy = stamp, racy
            return entry.parsed
        parsed = parse_file(path, data)
        reparsed.append(path)
        self._entries[path] = _Entry(stamp, digest, parsed, racy)
        return parsed

    # --- last good substitution ----------------------------------------------------------------------

    def _take(self, path: str, parsed: ParsedFile, candidate: dict[str, ParsedFile],
              errors: dict[str, FileError]) -> None:
        """Put `path`'s version into `candidate`: the fresh one, or its last good one with an error."""
        if not parsed.problems:
            candidate[path] = parsed
            return
        last = self._good.get(path)
        if last is not None:
            candidate[path] = last
        else:
            candidate.pop(path, None)
        errors[path] = FileError(path, _lines(parsed.problems), last is not None, 0.0)

    def _resolve(self, fresh: Mapping[str, ParsedFile]) -> _Outcome:
        candidate: dict[str, ParsedFile] = {}
        errors: dict[str, FileError] = {}
        for path, parsed in fresh.items():
            self._take(path, parsed, candidate, errors)
        return self._settle(candidate, errors, self._assembly.update(candidate), None)

    def _settle(self, candidate: dict[str, ParsedFile], errors: dict[str, FileError], rebuilt: int,
                moved: Collection[str] | None) -> _Outcome:
        """Assemble `candidate` (already given to the assembly); while a rule is broken, hold back the
        files to blame. `moved`: the files that changed since the last settled tree (None: unknown)."""
        self._settled = None
        for _ in range(len(candidate) + len(self._good) + 2):
            desired = self._assembly.desired()
            if desired is not None:
                desired, unreadable = self._seeds.resolve(desired, self._assembly.names_in(moved)
                                                          if moved is not None and rebuilt <= len(moved)
                                                          else None)
                if unreadable:
                    return None, errors, rebuilt, _lines(unreadable)
                self._good = candidate
                outcome: _Outcome = (desired, errors, rebuilt, ())
                self._settled = outcome
                return outcome
            problems = assemble(list(candidate.values())).problems  # the slow path: exact problems
            changed = {p for p in candidate.keys() | self._good.keys()
                       if candidate.get(p) is not self._good.get(p)}
            blamed = {p.path for p in problems} & changed
            if not blamed and not changed:
                return None, errors, rebuilt, _lines(problems)
            for path in blamed or changed:
                own = tuple(p for p in problems if p.path == path)
                if own:
                    lines = _lines(own)
                elif path in candidate:
                    lines = ("held back: the tree is not consistent with this version: " + str(problems[0]),)
                else:
                    lines = ("deleted, but the rest of the tree still needs it: " + str(problems[0]),)
                last = self._good.get(path)
                if last is not None:
                    candidate[path] = last
                else:
                    candidate.pop(path, None)
                errors[path] = FileError(path, lines, last is not None, 0.0)
            rebuilt += self._assembly.update(candidate)
            moved = None
        return None, errors, rebuilt, ("the manifests did not settle",)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return Stamp(st.st_mtime_ns, st.st_size, st.st_ino)


def _lines(problems: Sequence[Problem]) -> tuple[str, ...]:
    shown = [str(p) for p in problems[:MAX_PROBLEMS_PER_FILE]]
    if len(problems) > MAX_PROBLEMS_PER_FILE:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS_PER_FILE} more")
    return tuple(shown)
