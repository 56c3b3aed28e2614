"""`reconciler qmp NAME COMMAND [ARGS-JSON] [PATH...]`: one QMP command on an instance's monitor.

The equivalent of `virsh qemu-monitor-command`. QEMU serves one client per monitor socket, and the
reconciler's actions (apply, the watch daemon) use the control socket while they hold the node lock; so
this command takes the node locks too (operation "qmp", --lock-timeout as apply), finds the instance's
verified live process by discovery, sends the command on the control socket and prints QEMU's `return`
value as JSON. A QMP error is one line and exit 1; bad ARGS-JSON is a usage error (64).

ARGS-JSON is the first argument after COMMAND unless it names an existing file or directory; every other
argument is a manifest PATH (default ./manifests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.commands import argtypes
from reconciler.commands.common import load_desired, locked_fleet, report_unreachable
from reconciler.errors import InstanceNotFound, InstanceNotRunning, UsageError

if TYPE_CHECKING:
    from reconciler.model import DesiredState
    from reconciler.node import Node

DEFAULT_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the instance")
    parser.add_argument("qmp_command", metavar="COMMAND", help="the QMP command, e.g. query-status")
    parser.add_argument("rest", nargs="*", metavar="ARGS-JSON|PATH",
                        help="the command's arguments as a JSON object, then manifest files/directories "
                        "(default ./manifests)")
    parser.add_argument("--node", metavar="NODE",
                        help="the node, when the instance has live copies on several (interrupted migration)")
    parser.add_argument("--timeout", type=argtypes.seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"wait at most this long for QEMU's answer (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--lock-timeout", type=argtypes.seconds, default=None, metavar="SECONDS",
                        help="wait at most this long for the node locks (default: forever; 0: fail at once)")


def split_rest(rest: Sequence[str],
               exists: Callable[[str], bool] = os.path.exists) -> tuple[dict[str, Any] | None, list[str]]:
    """(ARGS-JSON as an object or None, manifest paths). UsageError for ARGS-JSON that is not an object."""
    if not rest or exists(rest[0]):
        return None, list(rest)
    text = rest[0]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"ARGS-JSON {text!r}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(value, dict):
        raise UsageError(f"ARGS-JSON {text!r}: must be a JSON object, e.g. '{{\"device\": \"ide0-cd0\"}}'")
    return value, list(rest[1:])


def run(args: argparse.Namespace) -> int:
    from reconciler import manifest

    arguments, paths = split_rest(args.rest)
    desired = load_desired(paths or list(manifest.DEFAULT_PATHS), "no QMP command sent")
    if args.node is not None and args.node not in desired.nodes:
        raise UsageError(f"--node {args.node}: not declared in the manifests")
    return asyncio.run(_run(args, desired, arguments))


async def _run(args: argparse.Namespace, desired: DesiredState, arguments: dict[str, Any] | None) -> int:
    async with locked_fleet(desired, "qmp", args.lock_timeout) as fleet:
        actual = await fleet.discover()
        found = [i for i in actual.find(args.name) if args.node is None or i.node == args.node]
        live = [i for i in found if i.state.has_process]
        if not live and fleet.unreachable:
            report_unreachable(fleet, 0)
            raise InstanceNotRunning(args.name, "not running on any reachable node")
        if not found and args.name not in desired.instances:
            raise InstanceNotFound(args.name)
        if not live:
            state = ", ".join(f"{i.state.value} on {i.node}" for i in found) or "never started"
            raise InstanceNotRunning(args.name, state)
        if len(live) > 1:
            where = ", ".join(i.node for i in live)
            raise UsageError(f"instance {args.name} has live copies on {where}: choose one with --node")
        result = await _send(fleet.nodes[live[0].node], args.name, args.qmp_command, arguments,
                             args.timeout)
    print(json.dumps(result, indent=2))
    return 0


async def _send(node: Node, name: str, command: str, arguments: dict[str, Any] | None, timeout: float) -> Any:
    from reconciler.executor.context import Deadlines
    from reconciler.executor.qmpcalls import close_quietly

    session = await node.qmp(name, Deadlines().qmp)
    try:
        return await session.execute(command, arguments, timeout=timeout)
    finally:
        await close_quietly(session)
