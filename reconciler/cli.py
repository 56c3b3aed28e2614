"""Command-line entry point: parse arguments, dispatch to one command module, map errors to exit codes.

Each subcommand lives in `reconciler.commands.<name>` with two functions, `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only for the command that runs, so `reconciler status` does not
pay for the planner's or the executor's imports.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from reconciler import __version__, classcode, phases, regexcode
from reconciler.errors import ExitCode, ReconcilerError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("reconciler.commands.validate", "check manifests against the schema and the semantic rules"),
    "schema": ("reconciler.commands.schema", "print the manifest JSON Schema"),
    "plan": ("reconciler.commands.plan", "show what apply would do (dry run)"),
    "apply": ("reconciler.commands.apply", "make the nodes match the manifests"),
    "watch": ("reconciler.commands.watch", "reconcile continuously on changes (daemon)"),
    "start": ("reconciler.commands.verbs", "start instances (Manual ones too): a one-action plan each"),
    "stop": ("reconciler.commands.verbs", "stop instances; the next reconcile may start them again"),
    "restart": ("reconciler.commands.verbs", "restart instances in a new QEMU process (the manifest's spec)"),
    "reboot": ("reconciler.commands.verbs", "reboot guests: system_reset in the same QEMU process"),
    "qmp": ("reconciler.commands.monitor", "run a QMP command on an instance's monitor, under the node lock"),
    "status": ("reconciler.commands.status", "show desired and actual state of instances"),
    "console": ("reconciler.commands.console", "attach to an instance's serial console"),
    "showcmd": ("reconciler.commands.showcmd", "print the QEMU command line of an instance"),
    "node-info": ("reconciler.commands.node_info", "show node resources and QEMU capabilities"),
    "disconnect": ("reconciler.commands.disconnect", "close the link keepers that hold remote nodes' SSH "
                   "connections between runs"),
    "agent": ("reconciler.commands.agent", "serve a remote controller on stdio (started over SSH)"),
}


def terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, as argparse asks it, without importing shutil (with bz2 and
    lzma, 5 ms of every run where nothing else imports it): $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter; argparse builds one per add_argument (to check the metavar), and its own
    asks shutil for the width."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {usage_message(message)}\n")


def usage_message(message: str) -> str:
    """argparse's message in our words: `--option: ...`, never the name of a Python function."""
    import re  # here: only a command line argparse rejects gets this far

    invalid = re.fullmatch(r"argument (?P<opt>\S+): invalid \S+ value: (?P<value>.*)", message, re.DOTALL)
    if invalid:
        return f"{invalid['opt']}: {invalid['value']} is not a valid value"
    return message.removeprefix("argument ")


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog="reconciler", description="Declarative manager for QEMU/KVM virtual machines.")
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:  # only the chosen command's module is imported
            importlib.import_module(module_name).add_arguments(cmd)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _parse(args_list: list[str]) -> argparse.Namespace:
    """Parse `reconciler COMMAND ARGS...` with options and positionals in any order.

    argparse alone stops taking positionals at the first option after them (`showcmd web1 --node n1
    PATH` would leave PATH unrecognized), so a command's own arguments are parsed by its parser with
    `parse_intermixed_args`; only a command line that does not start with a command goes to the top
    level parser (help, --version, errors).
    """
    if args_list and args_list[0] in COMMANDS:
        name = args_list[0]
        module_name, help_text = COMMANDS[name]
        cmd = _Parser(prog=f"reconciler {name}", description=help_text)
        importlib.import_module(module_name).add_arguments(cmd)
        try:
            ns = cmd.parse_intermixed_args(args_list[1:])
        except TypeError:  # a parser that intermixing cannot handle (argparse.REMAINDER and such)
            ns = cmd.parse_args(args_list[1:])
        ns.command = name
        return ns
    selected = _selected_command(args_list)
    return _build_parser(selected if selected in COMMANDS else None).parse_args(args_list)


def entry() -> NoReturn:
    """The console script: `main`, then a fast exit.

    Interpreter finalization (tearing down ~400 modules) costs ~13 ms after the work is done, which is
    a third of a stop's latency budget. Every resource is closed by the time `main` returns; flush the
    standard streams and leave without it.
    """
    code = main()
    classcode.save()  # the next run's dataclass methods come compiled (nothing is written when none is new)
    regexcode.save()  # and its regular expressions (the same)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    phases.mark("cli imports")
    try:
        return _main(argv)
    finally:
        phases.report()


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = _parse(args_list)
    if args.command is None:
        _build_parser(None).print_help(sys.stderr)
        return ExitCode.USAGE
    module = importlib.import_module(COMMANDS[args.command][0])
    phases.mark("command imports, arguments")
    try:
        return int(module.run(args))
    except ReconcilerError as err:
        for line in err.details:
            print(line, file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
