"""The plan's host checks, pure part (planner.needs): what a plan's launches need, what a node's answers
lack, and the exact plan errors. Table-driven; the node's answers are data (pathinfo.PathInfo)."""

from __future__ import annotations

import pytest

from reconciler.actual import ActualState, RunState
from reconciler.model import (
    DesiredState,
    Disk,
    FieldRef,
    KernelBoot,
    Kind,
    Nic,
    NicMode,
    NodeSpec,
    SourceRef,
    UpdatePolicy,
)
from reconciler.pathinfo import MISSING, PathInfo, PathKind
from reconciler.planner import Plan, PlanProblem, ProblemKind, make_plan
from reconciler.planner import needs as N
from reconciler.render.json import plan_from_dict, plan_to_dict
from reconciler.render.text import render_text

from .factories import actual, changed, rec, spec

FILE = PathInfo(PathKind.FILE)
EXE = PathInfo(PathKind.FILE, executable=True)
DIR = PathInfo(PathKind.DIRECTORY)
BLOCK = PathInfo(PathKind.BLOCK_DEVICE)
OTHER = PathInfo(PathKind.OTHER)
DENIED = PathInfo(PathKind.ERROR, error="Permission denied")

KERNEL = KernelBoot(kernel="/k/vmlinuz", root="/dev/vda", initrd="/k/initrd")
FULL = spec("web", node="a", kernel=KERNEL, disks=(Disk("/d/web.img"), Disk("/dev/vg/web")),
            nics=(Nic("52:54:00:00:00:01", bridge="br0"), Nic("52:54:00:00:00:02", mode=NicMode.USER),
                  Nic("52:54:00:00:00:03", bridge="br1", hook="/h/ifup")))
A = NodeSpec(name="a", state_dir="/s/a", qemu_binary="qemu-system-x86_64")
B = NodeSpec(name="b", state_dir="/s/b", qemu_binary="/opt/qemu/bin/qemu")


def _desired(*specs: object, nodes: tuple[NodeSpec, ...] = (A, B)) -> DesiredState:
    return DesiredState(instances={s.name: s for s in specs},  # type: ignore[attr-defined]
                        nodes={n.name: n for n in nodes})


ALL_THERE = {
    "a": {"qemu-system-x86_64": EXE, "/k/vmlinuz": FILE, "/k/initrd": FILE, "/d/web.img": FILE,
          "/dev/vg/web": BLOCK, "/sys/class/net/br0/bridge": DIR, "/h/ifup": EXE},
    "b": {"/opt/qemu/bin/qemu": EXE, "/k/vmlinuz": FILE, "/k/initrd": FILE, "/d/web.img": FILE,
          "/dev/vg/web": BLOCK, "/sys/class/net/br0/bridge": DIR, "/h/ifup": EXE},
}


def test_needs_of_lists_every_field_in_manifest_order() -> None:
    got = [(n.field.kind.value, n.field.name, N.field_text(n.field.path), n.value, n.kind.value, n.query)
           for n in N.needs_of(FULL, A)]
    assert got == [
        ("Node", "a", "spec.qemuBinary", "qemu-system-x86_64", "executable", "qemu-system-x86_64"),
        ("Instance", "web", "spec.kernel.path", "/k/vmlinuz", "file", "/k/vmlinuz"),
        ("Instance", "web", "spec.kernel.initrd", "/k/initrd", "file", "/k/initrd"),
        ("Instance", "web", "spec.disks[0].path", "/d/web.img", "disk", "/d/web.img"),
        ("Instance", "web", "spec.disks[1].path", "/dev/vg/web", "disk", "/dev/vg/web"),
        # a user-mode NIC needs nothing; a NIC with its own hook needs the hook, not a Linux bridge
        ("Instance", "web", "spec.nics[0].bridge", "br0", "bridge", "/sys/class/net/br0/bridge"),
        ("Instance", "web", "spec.nics[2].hook", "/h/ifup", "executable", "/h/ifup"),
    ]


def test_needs_of_a_bare_instance_is_the_binary_alone() -> None:
    assert [n.value for n in N.needs_of(spec("tiny", node="a"), A)] == ["qemu-system-x86_64"]


MOVED = changed(FULL, node="b")

# (case, desired instances, actual records) -> {node: [paths asked]}: which actions launch a QEMU, where
CASES = [
    ("start: the desired spec on its node", (FULL,), (), {"a": sorted(ALL_THERE["a"])}),
    ("no change: nothing launches", (FULL,), (rec(FULL, "a"),), {}),
    ("restart for a spec change: the new spec",
     (changed(FULL, kernel=None, disks=(), nics=()),), (rec(FULL, "a"),), {"a": ["qemu-system-x86_64"]}),
    ("in-place restart of a powered-off guest: same process, nothing",
     (FULL,), (rec(FULL, "a", RunState.SHUTDOWN),), {}),
    ("migration (kernel change pending): the recorded spec, on the target node",
     (changed(MOVED, kernel=None, update_policy=UpdatePolicy.PENDING),), (rec(FULL, "a"),),
     {"b": sorted(ALL_THERE["b"])}),
    ("relocation (kernel change): the desired spec, on the new node",
     (changed(MOVED, kernel=None),), (rec(FULL, "a"),),
     {"b": sorted(set(ALL_THERE["b"]) - {"/k/vmlinuz", "/k/initrd"})}),
    ("stop (Halted): nothing", (changed(FULL, run_strategy="Halted"),), (rec(FULL, "a"),), {}),
    ("start onto an undeclared node: a plan error already, nothing asked",
     (changed(FULL, node="zz"),), (), {}),
]


@pytest.mark.parametrize(("case", "specs", "recs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_which_actions_need_what(case: str, specs: tuple[object, ...], recs: tuple[object, ...],
                                 expected: dict[str, list[str]]) -> None:
    desired = _desired(*specs)
    state = actual(*recs)  # type: ignore[arg-type]
    reqs = N.requirements(make_plan(desired, state), desired, state)
    assert {n: sorted(q) for n, q in reqs.queries().items()} == expected


def test_paths_are_asked_once_per_node() -> None:
    twins = [spec(f"vm{i}", node="a", kernel=KERNEL, disks=(Disk(f"/d/vm{i}.img"),)) for i in range(3)]
    desired = _desired(*twins)
    reqs = N.requirements(make_plan(desired, ActualState()), desired, ActualState())
    assert {n: sorted(q) for n, q in reqs.queries().items()} == {
        "a": ["/d/vm0.img", "/d/vm1.img", "/d/vm2.img", "/k/initrd", "/k/vmlinuz", "qemu-system-x86_64"]}


def _missing(answers: dict[str, dict[str, PathInfo]], *specs: object) -> list[str]:
    desired = _desired(*specs)
    reqs = N.requirements(make_plan(desired, ActualState()), desired, ActualState())
    return [f"{m.need.instance}: {N.field_text(m.need.field.path)}: {m.detail}"
            for m in N.missing(reqs, answers)]


def _with(node: str, path: str, info: PathInfo) -> dict[str, dict[str, PathInfo]]:
    answers = {n: dict(a) for n, a in ALL_THERE.items()}
    answers[node][path] = info
    return answers


ON_B = changed(FULL, node="b")

# (path on node a or b, what the node says) -> the exact reason
DETAILS = [
    ("a", "/k/vmlinuz", MISSING, "web: spec.kernel.path: '/k/vmlinuz' does not exist on node a"),
    ("a", "/k/vmlinuz", DIR,
     "web: spec.kernel.path: '/k/vmlinuz' on node a is a directory, not a regular file"),
    ("a", "/k/initrd", BLOCK,
     "web: spec.kernel.initrd: '/k/initrd' on node a is a block device, not a regular file"),
    ("a", "/k/initrd", DENIED,
     "web: spec.kernel.initrd: '/k/initrd' cannot be checked on node a: Permission denied"),
    ("a", "/d/web.img", MISSING, "web: spec.disks[0].path: '/d/web.img' does not exist on node a"),
    ("a", "/d/web.img", DIR,
     "web: spec.disks[0].path: '/d/web.img' on node a is a directory, not a disk image file or block device"),
    ("a", "/dev/vg/web", OTHER,
     "web: spec.disks[1].path: '/dev/vg/web' on node a is a special file, "
     "not a disk image file or block device"),
    ("a", "/sys/class/net/br0/bridge", MISSING,
     "web: spec.nics[0].bridge: there is no bridge 'br0' on node a (/sys/class/net/br0/bridge is missing)"),
    ("a", "/sys/class/net/br0/bridge", FILE,
     "web: spec.nics[0].bridge: there is no bridge 'br0' on node a (/sys/class/net/br0/bridge is missing)"),
    ("a", "/h/ifup", FILE, "web: spec.nics[2].hook: '/h/ifup' on node a is not executable"),
    ("a", "/h/ifup", DIR,
     "web: spec.nics[2].hook: '/h/ifup' on node a is a directory, not an executable file"),
    ("a", "qemu-system-x86_64", MISSING, "web: spec.qemuBinary: 'qemu-system-x86_64' is not found in PATH"),
    ("a", "qemu-system-x86_64", PathInfo(PathKind.FILE, resolved="/usr/bin/qemu-system-x86_64"),
     "web: spec.qemuBinary: 'qemu-system-x86_64' (/usr/bin/qemu-system-x86_64) is not executable"),
    ("b", "/opt/qemu/bin/qemu", MISSING, "web: spec.qemuBinary: '/opt/qemu/bin/qemu' does not exist"),
]


@pytest.mark.parametrize(("node", "path", "info", "expected"), DETAILS)
def test_missing_says_exactly_why(node: str, path: str, info: PathInfo, expected: str) -> None:
    assert _missing(_with(node, path, info), FULL if node == "a" else ON_B) == [expected]


def test_everything_there_is_no_error() -> None:
    assert _missing(ALL_THERE, FULL) == []
    assert _missing(ALL_THERE, ON_B) == []


def test_a_path_the_node_did_not_answer_is_an_error() -> None:
    answers = _with("a", "/k/vmlinuz", FILE)
    del answers["a"]["/k/vmlinuz"]
    assert _missing(answers, FULL) == [
        "web: spec.kernel.path: '/k/vmlinuz' cannot be checked on node a: the node gave no answer for it"]


def test_one_missing_file_shared_by_instances_is_an_error_for_each() -> None:
    twins = [changed(FULL, name=f"vm{i}", disks=(), nics=()) for i in (2, 1)]
    assert _missing(_with("a", "/k/vmlinuz", MISSING), *twins) == [
        "vm1: spec.kernel.path: '/k/vmlinuz' does not exist on node a",
        "vm2: spec.kernel.path: '/k/vmlinuz' does not exist on node a",
    ]


def _problems(answers: dict[str, dict[str, PathInfo]], origins: dict[FieldRef, SourceRef],
              *specs: object) -> tuple[PlanProblem, ...]:
    desired = _desired(*specs)
    reqs = N.requirements(make_plan(desired, ActualState()), desired, ActualState())
    return N.problems(N.missing(reqs, answers), origins)


def test_problems_name_instance_field_node_and_place() -> None:
    answers = _with("a", "/k/vmlinuz", MISSING)
    answers["a"]["qemu-system-x86_64"] = MISSING
    kernel = FieldRef(Kind.INSTANCE, "web", ("spec", "kernel", "path"))
    binary = FieldRef(Kind.NODE, "a", ("spec", "qemuBinary"))
    origins = {kernel: SourceRef("m/defaults.yaml", 9, 5), binary: SourceRef("m/nodes.yaml", 4, 1)}
    got = _problems(answers, origins, FULL)
    assert [p.message for p in got] == [
        "m/nodes.yaml:4:1: instance web: node a: spec.qemuBinary: 'qemu-system-x86_64' is not found in PATH",
        "m/defaults.yaml:9:5: instance web: spec.kernel.path: '/k/vmlinuz' does not exist on node a",
    ]
    assert {(p.kind, p.subject) for p in got} == {(ProblemKind.MISSING_ON_NODE, "instance web")}


def test_problem_without_a_known_place_has_no_prefix() -> None:
    (problem,) = _problems(_with("a", "/d/web.img", MISSING), {}, FULL)
    assert problem.message == "instance web: spec.disks[0].path: '/d/web.img' does not exist on node a"
    assert problem.where is None


def test_rendered_text_and_json_round_trip() -> None:
    where = SourceRef("m/web.yaml", 12, 7)
    plan = Plan(errors=(PlanProblem(ProblemKind.MISSING_ON_NODE, "instance web",
                                    "spec.disks[0].path: '/d/web.img' does not exist on node a", where),))
    assert "  x m/web.yaml:12:7: instance web: spec.disks[0].path: '/d/web.img' does not exist on node a\n" \
        in render_text(plan)
    data = plan_to_dict(plan)
    assert data["errors"][0]["where"] == {"path": "m/web.yaml", "line": 12, "column": 7}
    assert plan_from_dict(data) == plan
