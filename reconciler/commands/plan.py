"""`reconciler plan [PATH...]`: show what apply would do, as text or JSON, optionally saved for apply.

The thin shell around the pure planner: load manifests, discover the nodes (remote ones over SSH, all at
once), plan, check on the nodes what the plan's launches need (files, binaries, bridges: planner.needs),
render. Exit codes: 0 no changes (or changes without --detailed-exitcode), 1 errors or an unreachable
node (one line each on stderr; the plan covers the others), 2 changes with --detailed-exitcode.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, TextIO

from reconciler.actual import ActualState
from reconciler.commands.common import load_desired
from reconciler.errors import ExitCode
from reconciler.model import DesiredState, NodeSpec

if TYPE_CHECKING:
    from reconciler.fleet import Fleet
    from reconciler.node import Node
    from reconciler.planner import Plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="manifest files or directories (default: ./manifests)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (docs/plan-json.md)")
    parser.add_argument("--out", metavar="FILE", help="save the plan for `apply --plan FILE`")
    parser.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when the plan has changes (0 none, 1 error)"
    )
    parser.add_argument(
        "--target", action="append", metavar="NAME", help="limit the plan to this instance (repeatable)"
    )
    parser.add_argument(
        "--prune", action="store_const", const=True, default=None,
        help="stop running instances no manifest declares (overrides the manifests' prune setting)",
    )
    parser.add_argument(
        "--allow-empty", action="store_true", help="allow pruning when the manifests declare no instances"
    )
    parser.add_argument(
        "--force", action="store_true",
        help="plan as `apply --force`: stop by signal a Halted instance whose QMP does not answer",
    )
    parser.add_argument("--no-color", action="store_true", help="never colour the output")


async def look(desired: DesiredState, make: Callable[[ActualState], Plan]) -> tuple[ActualState, Plan,
                                                                                  tuple[str, ...]]:
    """Discover every node (remote ones over SSH, all at once), plan with `make`, check on the nodes
    what the plan's launches need (files, binaries, bridges). Returns the actual state, the plan and one
    line per unreachable node.

    As apply does, a monitor that missed discovery's short deadline is asked again within apply's QMP
    deadline, so the plan shows what apply would find (and a saved plan is fingerprinted so)."""
    from reconciler import fleet, hostcheck, phases
    from reconciler.node import ask_again

    async with fleet.opened(desired.nodes.values()) as opened:
        phases.mark("connect")
        actual = await discover_fleet(opened)
        if any(i.qmp_unresponsive for i in actual):
            from reconciler.executor.context import Deadlines

            actual = await ask_again(opened.nodes, actual, Deadlines().qmp)
        phases.mark("discovery")
        plan = await hostcheck.check_async(make(actual), desired, actual, opened.nodes)
        return actual, plan, tuple(fleet.unreachable_lines(opened))


async def discover_fleet(opened: Fleet) -> ActualState:
    """The seam to discovery (tests replace it, and `discover_local`, with a fixed state)."""
    return await opened.discover()


def look_local(desired: DesiredState, make: Callable[[ActualState], Plan]) -> tuple[ActualState, Plan,
                                                                                    tuple[str, ...]]:
    """`look` for nodes all on this machine, without an event loop unless something needs one: a
    monitor that missed discovery's deadline (asked again, as `look` does), or a plan whose launches or
    deletions need the nodes checked. A plan with nothing to change never imports asyncio."""
    from reconciler import hostcheck, phases

    def nodes() -> dict[str, Node]:  # made only when a node has to be asked something
        from reconciler.node import local_nodes

        return local_nodes([desired.nodes[n] for n in sorted(desired.nodes)])

    phases.mark("connect")
    actual = discover_local(desired.nodes.values())
    if any(i.qmp_unresponsive for i in actual):
        import asyncio

        from reconciler.executor.context import Deadlines
        from reconciler.node import ask_again

        actual = asyncio.run(ask_again(nodes(), actual, Deadlines().qmp))
    phases.mark("discovery")
    plan = make(actual)
    checked = hostcheck.check_without_nodes(plan, desired, actual)
    if checked is None:
        checked = hostcheck.check(plan, desired, actual, nodes())
    return actual, checked, ()


def discover_local(nodes: Collection[NodeSpec]) -> ActualState:
    """The seam to discovery on this machine (see `discover_fleet`)."""
    from reconciler import discovery

    return discovery.discover(nodes)


def use_color(no_color_flag: bool, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never with --no-color or NO_COLOR set (https://no-color.org)."""
    if no_color_flag or environ.get("NO_COLOR"):
        return False
    return stream.isatty()


def run(args: argparse.Namespace) -> int:
    from reconciler import gitinfo, manifest, phases
    from reconciler.planner import make_plan
    from reconciler.render.text import RenderOptions, render_text

    paths = args.paths or list(manifest.DEFAULT_PATHS)
    git_started = gitinfo.describe_started(paths)  # runs while the manifests load and the plan is made
    desired = load_desired(paths, "no plan made")
    phases.mark("manifest load")
    targets = frozenset(args.target) if args.target else None

    def make(actual: ActualState) -> Plan:
        return make_plan(desired, actual, prune=args.prune, targets=targets, allow_empty=args.allow_empty,
                         force=args.force)

    if all(n.ssh is None for n in desired.nodes.values()):
        actual, plan, unreachable = look_local(desired, make)
    else:
        import asyncio

        actual, plan, unreachable = asyncio.run(look(desired, make))
    phases.mark("plan")
    git = git_started()
    phases.mark("git")
    if args.json:
        from reconciler.render.json import render_json  # only --json needs it

        sys.stdout.write(render_json(plan, git))
    else:
        options = RenderOptions(color=use_color(args.no_color, sys.stdout, os.environ))
        sys.stdout.write(render_text(plan, options, git))
    phases.mark("render")
    for line in unreachable:
        print(line, file=sys.stderr)
    if plan.errors:
        if args.out:
            print(f"the plan has errors; not saved to {args.out}", file=sys.stderr)
        return ExitCode.ERROR
    if args.out:
        from reconciler import planfile  # only --out needs it

        planfile.write_plan(args.out, planfile.SavedPlan(plan, planfile.fingerprint(desired, actual), git))
        print(f"Saved the plan to {args.out}. Apply it with: reconciler apply --plan {args.out}",
              file=sys.stderr)
    if unreachable:
        return ExitCode.ERROR
    if args.detailed_exitcode and not plan.empty:
        return ExitCode.CHANGES
    return ExitCode.OK
