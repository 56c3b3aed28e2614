"""Saved plans: `plan --out FILE` writes a plan with fingerprints of what it was made from.

`apply --plan FILE` applies exactly what was reviewed, so it must refuse the file when the manifests
or the nodes changed since (Terraform's "saved plan is stale"). The fingerprints keep enough detail
(per-instance spec hashes, per-record state/pid/start time) for `check_fresh` to name what changed.
Fingerprinting and checking are pure; `write_plan` and `load_plan` are the I/O edge.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.errors import ExitCode, ReconcilerError
from reconciler.gitinfo import GitInfo
from reconciler.model import DesiredState, spec_hash, to_jsonable
from reconciler.planner.actions import Plan
from reconciler.render.json import plan_from_dict, plan_to_dict
from reconciler.values import Value

FORMAT = "reconciler-saved-plan"
FORMAT_VERSION = "1.0"


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class SavedPlanError(ReconcilerError):
    """A saved plan file cannot be read or is not a saved plan."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"saved plan {self.path}: {self.detail}"


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class StalePlanError(ReconcilerError):
    """The world changed since the plan was saved; `reasons` names each change."""

    path: str
    reasons: tuple[str, ...]
    exit_code = ExitCode.STALE_PLAN

    @property
    def message(self) -> str:
        return f"saved plan {self.path} is stale: " + "; ".join(self.reasons)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class RecordPrint(Value):
    """One instance's actual state as a saved plan remembers it."""

    name: str
    node: str
    state: str
    pid: int | None
    started_at: float | None
    spec_hash: str | None


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Fingerprint(Value):
    """What a saved plan was made from, to tell when it has gone stale."""

    desired: str  # digest of everything below the line "desired"
    actual: str
    prune: bool
    instances: tuple[tuple[str, str], ...]  # (name, spec hash), sorted
    nodes: tuple[tuple[str, str], ...]  # (name, node spec hash), sorted
    records: tuple[RecordPrint, ...]  # sorted by (name, node)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class SavedPlan(Value):
    """A plan saved by `plan --out`, with the fingerprint it was made from."""

    plan: Plan
    fingerprint: Fingerprint
    git: GitInfo | None = None


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _record(rec: ActualInstance) -> RecordPrint:
    digest = spec_hash(rec.spec) if rec.spec is not None else rec.spec_hash
    return RecordPrint(rec.name, rec.node, rec.state.value, rec.pid, rec.started_at, digest)


def fingerprint(desired: DesiredState, actual: ActualState) -> Fingerprint:
    instances = tuple((n, spec_hash(desired.instances[n])) for n in sorted(desired.instances))
    nodes = tuple((n, _digest(to_jsonable(desired.nodes[n]))) for n in sorted(desired.nodes))
    records = tuple(sorted((_record(r) for r in actual.instances), key=lambda r: (r.name, r.node)))
    return Fingerprint(
        desired=_digest([desired.prune, instances, nodes]),
        actual=_digest([to_jsonable(r) for r in records]),
        prune=desired.prune, instances=instances, nodes=nodes, records=records,
    )


def _pairs_diff(kind: str, old: tuple[tuple[str, str], ...], new: tuple[tuple[str, str], ...]) -> list[str]:
    before, after = dict(old), dict(new)
    reasons = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            reasons.append(f"{kind} {name}: no longer declared")
        elif name not in before:
            reasons.append(f"{kind} {name}: newly declared")
        elif before[name] != after[name]:
            reasons.append(f"{kind} {name}: manifest changed")
    return reasons


_FIELDS = ("state", "pid", "started_at", "spec_hash")
_IDENTITY = ("pid", "started_at", "spec_hash")
_UNKNOWN = RunState.UNKNOWN.value


def record_change(b: RecordPrint, a: RecordPrint, unresponsive: bool) -> str:
    """What differs between a record as the plan saw it (`b`) and now (`a`), in words.

    A monitor that does not answer is not a change of the instance: when the process is the same (pid,
    start time, spec) and only its state went to unknown because its QMP did not answer (`unresponsive`,
    after discovery asked again), or came back from unknown, the words say so, apart from a real change.
    """
    same_process = all(getattr(b, f) == getattr(a, f) for f in _IDENTITY)
    if same_process and unresponsive and a.state == _UNKNOWN and b.state != _UNKNOWN:
        return f"QMP slow/unresponsive (state {b.state} -> {a.state}; same process, pid {a.pid})"
    if same_process and b.state == _UNKNOWN and a.state != _UNKNOWN:
        return (f"QMP answers now (state {b.state} -> {a.state}; same process, pid {a.pid}): its state "
                "was unknown when the plan was made")
    changed = [f for f in _FIELDS if getattr(b, f) != getattr(a, f)]
    return ", ".join(f"{f} {getattr(b, f)} -> {getattr(a, f)}" for f in changed)


def _records_diff(old: tuple[RecordPrint, ...], new: tuple[RecordPrint, ...],
                  unresponsive: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    before = {(r.name, r.node): r for r in old}
    after = {(r.name, r.node): r for r in new}
    reasons = []
    for key in sorted(before.keys() | after.keys()):
        where = f"instance {key[0]} on {key[1]}"
        b, a = before.get(key), after.get(key)
        if a is None:
            reasons.append(f"{where}: record gone")
        elif b is None:
            reasons.append(f"{where}: new record ({a.state})")
        elif b != a:
            reasons.append(f"{where}: {record_change(b, a, key in unresponsive)}")
    return reasons


def check_fresh(saved: SavedPlan, desired: DesiredState, actual: ActualState) -> tuple[str, ...]:
    """Why `saved` no longer applies to (desired, actual): one line per change; empty when fresh.

    `actual` should come from a discovery that asked slow monitors again (node.ask_again): a record
    still unresponsive then is reported as "QMP slow/unresponsive", not as a change of the instance."""
    now = fingerprint(desired, actual)
    then = saved.fingerprint
    reasons: list[str] = []
    if now.desired != then.desired:
        if now.prune != then.prune:
            reasons.append(f"manifests: prune {then.prune} -> {now.prune}")
        reasons += _pairs_diff("instance", then.instances, now.instances)
        reasons += _pairs_diff("node", then.nodes, now.nodes)
        if not reasons:
            reasons.append("manifests changed")
    if now.actual != then.actual:
        unresponsive = frozenset((i.name, i.node) for i in actual.instances if i.qmp_unresponsive)
        reasons += _records_diff(then.records, now.records, unresponsive) or ["nodes changed"]
    return tuple(reasons)


# --- file format ---------------------------------------------------------------------------------


def saved_to_dict(saved: SavedPlan) -> dict[str, Any]:
    fp = saved.fingerprint
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "plan": plan_to_dict(saved.plan, saved.git),
        "fingerprint": {
            "desired": fp.desired,
            "actual": fp.actual,
            "prune": fp.prune,
            "instances": dict(fp.instances),
            "nodes": dict(fp.nodes),
            "records": [to_jsonable(r) for r in fp.records],
        },
    }


def _git_from(data: Any) -> GitInfo | None:
    if data is None:
        return None
    return GitInfo(root=str(data["root"]), commit=str(data["commit"]), dirty=bool(data["dirty"]))


def saved_from_dict(data: dict[str, Any]) -> SavedPlan:
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"not a {FORMAT} {FORMAT_VERSION} file")
    fp = data["fingerprint"]
    records = tuple(
        RecordPrint(str(r["name"]), str(r["node"]), str(r["state"]), r["pid"], r["started_at"],
                    r["spec_hash"])
        for r in fp["records"]
    )
    fingerprint_ = Fingerprint(
        desired=str(fp["desired"]), actual=str(fp["actual"]), prune=bool(fp["prune"]),
        instances=tuple((str(k), str(v)) for k, v in fp["instances"].items()),
        nodes=tuple((str(k), str(v)) for k, v in fp["nodes"].items()),
        records=records,
    )
    return SavedPlan(plan_from_dict(data["plan"]), fingerprint_, _git_from(data["plan"]["git"]))


def dumps(saved: SavedPlan) -> str:
    return json.dumps(saved_to_dict(saved), indent=2) + "\n"


def write_plan(path: str, saved: SavedPlan) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a plan."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(saved))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_plan(path: str) -> SavedPlan:
    """Read a saved plan; SavedPlanError on anything unreadable, corrupt or of another format."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SavedPlanError(path, f"cannot read: {getattr(err, 'strerror', None) or err}") from err
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("top level is not an object")
        return saved_from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SavedPlanError(path, f"corrupt or not a saved plan ({type(err).__name__}: {err})") from err
