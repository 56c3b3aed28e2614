"""`reconciler apply [PATH... | --plan FILE]`: make the nodes match the manifests.

As `terraform apply`: show the plan, ask on a terminal unless --yes (a saved plan was reviewed already:
no question), carry it out with progress lines, print a summary. Exit 0 only if every action succeeded;
a saved plan that no longer matches the manifests or the nodes is refused (ExitCode.STALE_PLAN).

The whole run holds the node lock of every declared node (operation "apply"), taken on each node in name
order before discovery, so the plan is made and carried out against a world no other apply or daemon is
changing. Remote nodes are reached over SSH (reconciler.fleet), all at once; a node that cannot be reached
is named on stderr, nothing is planned on it or for what it may run, the rest is applied, and the run
exits 1. The plan, made
here or saved, is checked on the nodes as `plan` checks it (files, binaries, bridges its launches need,
planner.needs): anything missing is a plan error and nothing is applied.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

from reconciler.commands import argtypes
from reconciler.commands.common import confirm, load_desired, locked_fleet, report_unreachable
from reconciler.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from reconciler.fleet import Fleet
    from reconciler.model import DesiredState
    from reconciler.node import Node
    from reconciler.planner import Plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="manifest files or directories (default: ./manifests)")
    parser.add_argument("--plan", metavar="FILE", help="apply a plan saved by `plan --out FILE`, exactly")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--parallel", type=argtypes.positive_int, default=4, metavar="N",
                        help="actions on different instances at once (default 4)")
    parser.add_argument("--lock-timeout", type=argtypes.seconds, default=None, metavar="SECONDS",
                        help="wait at most this long for the node locks (default: forever; 0: fail at once)")
    parser.add_argument("--force", action="store_true",
                        help="stop instances without ACPI (quit at once); stop by signal a Halted instance "
                             "whose QMP does not answer")
    parser.add_argument("--target", action="append", metavar="NAME",
                        help="limit the plan to this instance (repeatable)")
    parser.add_argument("--prune", action="store_const", const=True, default=None,
                        help="stop running instances no manifest declares")
    parser.add_argument("--allow-empty", action="store_true",
                        help="allow pruning when the manifests declare no instances")
    parser.add_argument("--no-color", action="store_true", help="never colour the output")


def run(args: argparse.Namespace) -> int:
    from reconciler import manifest, phases

    if args.plan and (args.target or args.prune is not None or args.allow_empty):
        raise UsageError("--plan applies the saved plan as it is; --target/--prune/--allow-empty belong to "
                         "`reconciler plan`")
    paths = args.paths or list(manifest.DEFAULT_PATHS)
    desired = load_desired(paths, "nothing applied")
    phases.mark("manifest load")
    return asyncio.run(_run(args, paths, desired))


async def _run(args: argparse.Namespace, paths: list[str], desired: DesiredState) -> int:
    async with locked_fleet(desired, "apply", args.lock_timeout) as fleet:
        code = await _locked(args, paths, desired, fleet)
    return report_unreachable(fleet, code)


async def _locked(args: argparse.Namespace, paths: list[str], desired: DesiredState, fleet: Fleet) -> int:
    from reconciler import gitinfo, hostcheck, phases
    from reconciler.commands.plan import use_color
    from reconciler.node import ask_again
    from reconciler.planner import make_plan
    from reconciler.render.text import RenderOptions, render_text

    phases.mark("lock")
    git_started = gitinfo.describe_started(paths)  # git runs while the nodes are asked
    actual = await fleet.discover()
    if any(i.qmp_unresponsive for i in actual):
        # A monitor slow to answer is asked again within our QMP deadline: it is neither a change that
        # makes a saved plan stale nor, under --force, a process to stop by signal.
        from reconciler.executor.context import Deadlines

        actual = await ask_again(fleet.nodes, actual, Deadlines().qmp)
    phases.mark("discovery")
    git = git_started()
    phases.mark("git")
    if args.plan:
        from reconciler import planfile  # only saved plans need it (import time counts for every apply)

        saved = planfile.load_plan(args.plan)
        reasons = planfile.check_fresh(saved, desired, actual)
        if reasons:
            raise planfile.StalePlanError(args.plan, reasons)
        plan = saved.plan
    else:
        targets = frozenset(args.target) if args.target else None
        plan = make_plan(desired, actual, prune=args.prune, targets=targets, allow_empty=args.allow_empty,
                         force=args.force)
    plan = await hostcheck.check_async(plan, desired, actual, fleet.nodes)
    phases.mark("plan")
    sys.stdout.write(render_text(plan, RenderOptions(color=use_color(args.no_color, sys.stdout, os.environ)),
                                 git))
    sys.stdout.flush()
    phases.mark("render")
    if plan.errors:
        print("the plan has errors; nothing applied", file=sys.stderr)
        return ExitCode.ERROR
    if plan.empty:
        return ExitCode.OK
    if not args.plan and not args.yes and not await asyncio.to_thread(confirm, "apply"):
        print("Apply cancelled.", file=sys.stderr)
        return ExitCode.ERROR
    revision = None if git is None else git.commit + ("-dirty" if git.dirty else "")
    code = await _execute(plan, desired, fleet.nodes, revision, args)
    phases.mark("action")
    return code


async def _execute(plan: Plan, desired: DesiredState, nodes: dict[str, Node], revision: str | None,
                   args: argparse.Namespace) -> int:
    from reconciler.executor.context import Context
    from reconciler.executor.progress import LineProgress
    from reconciler.executor.schedule import run_plan

    ctx = Context(nodes=nodes, specs=desired.instances, progress=LineProgress(), revision=revision,
                  force=args.force)
    summary = await run_plan(plan, ctx, args.parallel)
    print()
    for failed in summary.failed:
        print(f"error: {failed.action.name}: {failed.action.kind.value} {failed.status.value}: "
              f"{failed.detail}", file=sys.stderr)
    print(summary.line())
    return ExitCode.OK if summary.ok else ExitCode.ERROR
