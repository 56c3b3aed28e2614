"""`reconciler showcmd NAME [PATH...]`: print the QEMU command line an instance would start with.

Like Proxmox's `qm showcmd --pretty`: the argv the executor would run, shell-quoted, one option per line with
trailing backslashes, so it can be read, diffed or pasted into a shell. It is computed from the manifests
(the desired spec), not read from a running process. When tap NICs need the bridge hook's environment, it
is shown as a `VAR=value` prefix, so the pasted command behaves like the executor's start.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler import argv as qemu_argv
from reconciler.errors import InstanceNotFound, ManifestLoadError, ReconcilerError, UsageError
from reconciler.model import DesiredState, InstanceSpec, NodeSpec

DEFAULT_MANIFESTS = "manifests"


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class InstanceUnscheduled(ReconcilerError):
    """`showcmd` of an instance that no node is chosen for."""

    name: str

    @property
    def message(self) -> str:
        return (f"instance {self.name} is unscheduled: it names no node and placement happens in the "
                "planner; pass --node NODE to see its command line on a node")


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class UnknownNode(ReconcilerError):
    """`showcmd` of an instance whose node is not declared."""

    instance: str
    node: str

    @property
    def message(self) -> str:
        return f"instance {self.instance}: node {self.node} is not declared in the manifests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the instance")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help=f"manifest files or directories (default: ./{DEFAULT_MANIFESTS})")
    parser.add_argument("--node", help="show the command line on this node (default: the instance's node)")
    parser.add_argument("--incoming", metavar="HOST:PORT|defer",
                        help="show it as a migration target listening on HOST:PORT (or `defer`)")
    parser.add_argument("--oneline", action="store_true", help="one line instead of one option per line")


def run(args: argparse.Namespace) -> int:
    from reconciler import manifest  # imported here: the schema machinery is not needed otherwise

    result = manifest.load(list(args.paths) or [DEFAULT_MANIFESTS])
    if result.problems or result.desired is None:
        raise ManifestLoadError(tuple(str(p) for p in result.problems), "no command line shown")
    spec, node = select(result.desired, args.name, args.node)
    launch = qemu_argv.build_launch(spec, node, incoming=parse_incoming(args.incoming))
    print(render(launch.argv, launch.env, pretty=not args.oneline))
    return 0


# --- pure core ------------------------------------------------------------------------------------------


def select(desired: DesiredState, name: str, node_name: str | None) -> tuple[InstanceSpec, NodeSpec]:
    spec = desired.instances.get(name)
    if spec is None:
        raise InstanceNotFound(name)
    chosen = node_name or spec.node
    if chosen is None:
        raise InstanceUnscheduled(name)
    node = desired.nodes.get(chosen)
    if node is None:
        raise UnknownNode(name, chosen)
    return spec, node


def parse_incoming(text: str | None) -> qemu_argv.IncomingSpec | None:
    if text is None:
        return None
    if text == "defer":
        return qemu_argv.IncomingSpec()
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--incoming: expected HOST:PORT or defer, not {text!r}")
    return qemu_argv.IncomingSpec(host, int(port))


def render(argv: Sequence[str], env: Sequence[tuple[str, str]] = (), *, pretty: bool = True) -> str:
    """Shell-quoted argv; pretty: one option (a `-flag` and its values) per line, continued with ` \\`."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in env]
    if not pretty:
        return " ".join([*prefix, shlex.join(argv)])
    lines: list[list[str]] = [[p] for p in prefix]
    lines.append([shlex.quote(argv[0])] if argv else [])
    for arg in argv[1:]:
        if arg.startswith("-"):
            lines.append([])
        lines[-1].append(shlex.quote(arg))
    body = [" ".join(words) for words in lines]
    return " \\\n".join(body[: len(prefix) + 1] + ["  " + b for b in body[len(prefix) + 1:]])
