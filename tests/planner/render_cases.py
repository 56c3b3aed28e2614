"""Plans used by the golden render tests (kept apart from the expected text)."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.actual import RunState, StopCause
from reconciler.gitinfo import GitInfo
from reconciler.model import Disk, Migration, MigrationMode, RunStrategy, UpdatePolicy
from reconciler.planner import Plan, make_plan

from .factories import actual, changed, desired, node, rec, spec

WEB = spec("web", node="a")


@dataclass(frozen=True)
class RenderCase:
    id: str
    plan: Plan
    git: GitInfo | None = None
    color: bool = False


RENDER_CASES = [
    RenderCase("no-changes", make_plan(desired(WEB), actual(rec(WEB, "a")))),
    RenderCase("no-changes-git-clean", make_plan(desired(WEB), actual(rec(WEB, "a"))),
               git=GitInfo("/srv/manifests", "a" * 40, False)),
    RenderCase("start", make_plan(desired(WEB), actual())),
    RenderCase(
        "mixed",
        make_plan(
            desired(spec("new", 1024, node="a"), changed(WEB, memory_mib=1024, labels=(("tier", "web"),)),
                    spec("mover", 256, node="b", migration=Migration(mode=MigrationMode.OFFLINE)),
                    spec("db", 2048, node="a", update_policy=UpdatePolicy.PENDING, vcpus=4),
                    spec("halt", 512, node="b", run_strategy=RunStrategy.HALTED),
                    nodes=(node("a", 4096), node("b", 2048))),
            actual(rec(WEB, "a"), rec(spec("mover", 256, node="a"), "a"),
                   rec(spec("db", 2048, node="a", update_policy=UpdatePolicy.PENDING), "a"),
                   rec(spec("halt", 512, node="b"), "b"), rec(spec("old"), "b"),
                   rec(spec("keep", protect=True), "b")),
        ),
        git=GitInfo("/srv/manifests", "0123456789abcdef0123456789abcdef01234567", True),
    ),
    RenderCase(
        "restarts-and-prune",
        make_plan(
            desired(spec("off", node="a"), spec("stale", node="a"), changed(WEB, node="b", vcpus=2)),
            actual(rec(spec("off", node="a"), "a", RunState.SHUTDOWN),
                   rec(spec("stale", node="a"), "a", RunState.STALE), rec(WEB, "a"), rec(spec("gone"), "b")),
            prune=True,
        ),
    ),
    RenderCase(
        "errors-and-warnings",
        make_plan(
            desired(spec("big", 4096), changed(WEB, vcpus=2), spec("dup", node="a"),
                    nodes=(node("a", 1024),)),
            actual(rec(WEB, "a", RunState.UNKNOWN), rec(spec("dup", node="a"), "a"),
                   rec(spec("dup", node="a"), "b")),
            targets=frozenset({"big", "web", "dup"}),
        ),
    ),
    RenderCase(
        "record-update",
        make_plan(desired(changed(WEB, protect=True, labels=(("tier", "web"),), shutdown_timeout=5.0),
                          spec("db", 2048, node="a", update_policy=UpdatePolicy.PENDING, vcpus=2)),
                  actual(rec(WEB, "a"), rec(spec("db", 2048, node="a"), "a"))),
    ),
    RenderCase(
        "handoff",
        make_plan(desired(spec("r2", node="a", disks=(Disk("/srv/r.img", boot=True),)), prune=True),
                  actual(rec(spec("r1", node="a", disks=(Disk("/srv/r.img", boot=True),)), "a"))),
    ),
    RenderCase(
        "record-update-color",
        make_plan(desired(changed(WEB, protect=True)), actual(rec(WEB, "a"))),
        color=True,
    ),
    RenderCase(
        "capped-migration",
        make_plan(desired(spec("slow", node="b", migration=Migration(max_bandwidth=4 << 20)),
                          spec("odd", node="b", migration=Migration(max_bandwidth=1000)),
                          spec("fast", node="b")),
                  actual(rec(spec("slow", node="a"), "a"), rec(spec("odd", node="a"), "a"),
                         rec(spec("fast", node="a"), "a"))),
    ),
    RenderCase(
        "color",
        make_plan(desired(changed(WEB, memory_mib=1024), spec("n", node="b"), spec("m", node="b")),
                  actual(rec(WEB, "a"), rec(spec("m", node="a"), "a"), rec(spec("x"), "a"),
                         rec(spec("c", node="a"), "a", RunState.CRASHED, StopCause.CRASH)),
                  prune=True),
        color=True,
    ),
]
