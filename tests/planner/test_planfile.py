"""Saved plans: round trip through a file, stale detection naming what changed, corrupt files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.actual import ActualState, RunState
from reconciler.gitinfo import GitInfo
from reconciler.model import DesiredState
from reconciler.planfile import SavedPlan, SavedPlanError, check_fresh, fingerprint, load_plan, write_plan
from reconciler.planner import make_plan

from .factories import actual, changed, desired, node, rec, spec

WEB = spec("web", node="a")
DB = spec("db", node="b")
D = desired(changed(WEB, vcpus=2), DB)
A = actual(replace(rec(WEB, "a"), pid=101, started_at=1700000000.25))


def _saved() -> SavedPlan:
    return SavedPlan(make_plan(D, A), fingerprint(D, A), GitInfo("/srv/m", "c" * 40, True))


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    saved = _saved()
    write_plan(str(path), saved)
    assert load_plan(str(path)) == saved
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temp file left behind


def test_fresh_when_nothing_changed() -> None:
    assert check_fresh(_saved(), D, A) == ()


@pytest.mark.parametrize(
    ("desired_now", "actual_now", "reasons"),
    [
        (desired(changed(WEB, vcpus=4), DB), A, ("instance web: manifest changed",)),
        (desired(changed(WEB, vcpus=2)), A, ("instance db: no longer declared",)),
        (desired(changed(WEB, vcpus=2), DB, spec("new")), A, ("instance new: newly declared",)),
        (desired(changed(WEB, vcpus=2), DB, nodes=(node("a", 1024), node("b"))), A,
         ("node a: manifest changed",)),
        (desired(changed(WEB, vcpus=2), DB, prune=True), A, ("manifests: prune False -> True",)),
        (D, actual(replace(A.instances[0], state=RunState.STOPPED, pid=None)),
         ("instance web on a: state running -> stopped, pid 101 -> None",)),
        (D, actual(replace(A.instances[0], started_at=1700000099.0, pid=102)),
         ("instance web on a: pid 101 -> 102, started_at 1700000000.25 -> 1700000099.0",)),
        (D, actual(*A.instances, rec(DB, "b")), ("instance db on b: new record (running)",)),
        (D, actual(), ("instance web on a: record gone",)),
        (desired(changed(WEB, vcpus=4), DB), actual(),
         ("instance web: manifest changed", "instance web on a: record gone")),
    ],
)
def test_stale_names_what_changed(
    desired_now: DesiredState, actual_now: ActualState, reasons: tuple[str, ...]
) -> None:
    assert check_fresh(_saved(), desired_now, actual_now) == reasons


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "corrupt or not a saved plan (JSONDecodeError"),
        (b"[1, 2]", "corrupt or not a saved plan (TypeError: top level is not an object)"),
        (b'{"format": "other"}',
         "corrupt or not a saved plan (ValueError: not a reconciler-saved-plan 1.0 file)"),
        (b"\xff\xfe", "cannot read"),
    ],
)
def test_corrupt_file_is_a_typed_error(tmp_path: Path, content: bytes, detail: str) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(SavedPlanError) as err:
        load_plan(str(path))
    assert str(err.value).startswith(f"saved plan {path}: {detail}")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    write_plan(str(path), _saved())
    text = path.read_text()
    path.write_text(text.replace('"fingerprint"', '"fingerprynt"'))
    with pytest.raises(SavedPlanError, match="KeyError"):
        load_plan(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SavedPlanError, match="cannot read: No such file or directory"):
        load_plan(str(tmp_path / "nope.json"))
