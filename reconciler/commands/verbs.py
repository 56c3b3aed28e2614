"""`reconciler start | stop | restart | reboot NAME... [PATH...]`: the imperative verbs.

For what GitOps does not cover: Manual instances, a reboot without a spec change, recovery (KubeVirt's
start/stop/restart subresources, `virsh reboot`). Each verb is a plan of one action per instance
(reconciler.planner.verbs), shown before it runs, confirmed on a terminal unless --yes, and carried out by
the executor under the node locks (operation: the verb), exactly as apply carries out its plans. Where the
next reconcile would undo the verb (stopping an Always instance, starting a Halted one), the plan says so.

Exit codes: 0 done (or nothing to do); 1 a failed action, a plan error, or an unknown NAME; 4 lock timeout;
64 usage (no terminal and no --yes, too); 130 interrupted.
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
    from reconciler.planner.verbs import Verb



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="NAME|PATH",
                        help="instance names, and manifest files/directories (default ./manifests)")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--lock-timeout", type=argtypes.seconds, default=None, metavar="SECONDS",
                        help="wait at most this long for the node locks (default: forever; 0: fail at once)")
    parser.add_argument("--no-color", action="store_true", help="never colour the output")
    if parser.prog.split()[-1] in ("stop", "restart"):
        parser.add_argument("--force", action="store_true", help="stop without ACPI (quit at once)")


def run(args: argparse.Namespace) -> int:
    from reconciler import manifest
    from reconciler.commands.status import split_targets
    from reconciler.planner.verbs import Verb

    verb = Verb(args.command)
    names, paths = split_targets(args.targets)
    if not names:
        raise UsageError(f"{verb.value}: name at least one instance (only manifest paths given)")
    paths = paths or list(manifest.DEFAULT_PATHS)
    desired = load_desired(paths, f"nothing done ({verb.value})")
    return asyncio.run(_run(verb, names, args, paths, desired))


async def _run(verb: Verb, names: list[str], args: argparse.Namespace, paths: list[str],
               desired: DesiredState) -> int:
    async with locked_fleet(desired, verb.value, args.lock_timeout) as fleet:
        code = await _locked(verb, names, args, paths, desired, fleet)
    return report_unreachable(fleet, code)


async def _locked(verb: Verb, names: list[str], args: argparse.Namespace, paths: list[str],
                  desired: DesiredState, fleet: Fleet) -> int:
    from reconciler import gitinfo, hostcheck
    from reconciler.commands.plan import use_color
    from reconciler.planner.verbs import verb_plan
    from reconciler.render.text import RenderOptions, render_text

    actual = await fleet.discover()
    made = verb_plan(verb, names, desired, actual)
    # a start needs its files, as in apply
    plan = await hostcheck.check_async(made.plan, desired, actual, fleet.nodes)
    for note in made.notes:
        print(note)
    if plan.empty and not plan.errors:
        for warning in plan.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return ExitCode.OK
    if made.notes:
        print()
    color = use_color(args.no_color, sys.stdout, os.environ)
    sys.stdout.write(render_text(plan, RenderOptions(color=color)))
    sys.stdout.flush()
    if plan.errors:
        print(f"the plan has errors; nothing done ({verb.value})", file=sys.stderr)
        return ExitCode.ERROR
    if not args.yes and not await asyncio.to_thread(confirm, verb.value):
        print(f"{verb.value.capitalize()} cancelled.", file=sys.stderr)
        return ExitCode.ERROR
    git = gitinfo.describe(paths)
    revision = None if git is None else git.commit + ("-dirty" if git.dirty else "")
    return await _execute(verb, plan, desired, fleet.nodes, revision, bool(getattr(args, "force", False)))


async def _execute(verb: Verb, plan: Plan, desired: DesiredState, nodes: dict[str, Node],
                   revision: str | None, force: bool) -> int:
    from reconciler.executor.context import Context
    from reconciler.executor.progress import LineProgress
    from reconciler.executor.schedule import run_plan

    ctx = Context(nodes=nodes, specs=desired.instances, progress=LineProgress(), revision=revision,
                  force=force)
    summary = await run_plan(plan, ctx)
    print()
    for failed in summary.failed:
        print(f"error: {failed.action.name}: {failed.action.kind.value} {failed.status.value}: "
              f"{failed.detail}", file=sys.stderr)
    done = sum(1 for r in summary.results if r.ok)
    if summary.ok:
        print(f"{verb.value.capitalize()} complete: {done} of {len(summary.results)} done.")
        return ExitCode.OK
    print(f"{verb.value.capitalize()} finished with errors: {done} of {len(summary.results)} done.")
    return ExitCode.ERROR
