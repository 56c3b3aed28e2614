"""`reconciler disconnect [PATH...] [--node NAME] [--all]`: end the link keepers of remote nodes.

A keeper (reconciler.remote.keeper) holds a node's SSH connection for `ssh.persist` after the last run,
as OpenSSH's ControlPersist does; this is its `ssh -O exit`. Runs in flight through the keeper lose
their link (their calls fail; nothing is guessed). Each keeper's process has exited when this returns.
"""

from __future__ import annotations

import argparse

from reconciler.errors import ExitCode, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="manifest files or directories (default: ./manifests)")
    parser.add_argument("--node", metavar="NAME", help="only this node's keeper")
    parser.add_argument("--all", action="store_true",
                        help="every keeper of this user, whatever the manifests say")


def run(args: argparse.Namespace) -> int:
    from reconciler import fleet, manifest
    from reconciler.commands.common import load_desired
    from reconciler.remote import keeperclient

    if args.all:
        if args.node or args.paths:
            raise UsageError("--all ends every keeper; it takes no --node and no PATH")
        for closed in keeperclient.close_all():
            print(f"closed the link keeper with pid {closed}")
        return ExitCode.OK
    desired = load_desired(args.paths or list(manifest.DEFAULT_PATHS), "nothing disconnected")
    nodes = [n for n in desired.nodes.values() if n.ssh is not None]
    if args.node is not None:
        if args.node not in desired.nodes:
            raise UsageError(f"--node {args.node}: not declared in the manifests")
        nodes = [n for n in nodes if n.name == args.node]
        if not nodes:
            raise UsageError(f"--node {args.node}: a local node has no link keeper")
    for node in sorted(nodes, key=lambda n: n.name):
        target = fleet.target_of(node)
        try:
            pid = keeperclient.close_keeper(keeperclient.paths_of(target))
        except OSError as err:
            print(f"{node.name}: cannot close its link keeper: {err}")
            continue
        print(f"{node.name}: " + ("no link keeper" if pid is None else f"closed the link keeper (pid {pid})"))
    return ExitCode.OK
