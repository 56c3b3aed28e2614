"""`reconciler console NAME`: attach the terminal to an instance's serial console, like `virsh console`.

The seed shelled out to socat, which left Ctrl-C killing the console and no way to detach in raw mode.
Here the terminal goes raw (every key, Ctrl-C included, reaches the guest), a select loop copies bytes
both ways, and Ctrl-] detaches. The terminal is restored on every exit path (detach, the guest's QEMU
closing the socket, an error, a signal turned into an exception). When VNC is on, its address is printed
first, as the seed did (but with the bind address's value, not the constant's name).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import socket
import sys
import termios
import tty
from collections.abc import Iterator

from reconciler import discovery, layout, model
from reconciler.actual import ActualInstance, ActualState
from reconciler.commands.status import actual_label, load_desired, split_targets
from reconciler.errors import ConsoleError, InstanceNotFound, InstanceNotRunning, UsageError

DETACH = b"\x1d"  # Ctrl-]
VNC_BASE_PORT = 5900


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the instance")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="manifest files/directories (default ./manifests)")


def run(args: argparse.Namespace) -> int:
    names, paths = split_targets([*args.paths])
    if names:
        raise UsageError(f"console takes one instance name; {names[0]!r} is not a manifest path")
    desired, nodes = load_desired(paths)
    declared = desired is not None and args.name in desired.instances
    with _attached(args.name, nodes, declared) as (inst, path):
        sock = _connect(args.name, path)
        with sock, _raw_terminal(sys.stdin.fileno()):  # raw before saying so: keys typed next go to the guest
            print(f"Connected to {inst.name} on {inst.node}. Escape character is ^]\r",
                  file=sys.stderr, flush=True)
            reason = relay(sys.stdin.fileno(), sys.stdout.fileno(), sock)
    print(f"\r\n{reason}", file=sys.stderr)
    return 0


def _checked(name: str, inst: ActualInstance) -> ActualInstance:
    spec = inst.spec
    if spec is not None and spec.vnc is not None:
        print(vnc_line(spec.vnc), flush=True)
    if spec is not None and not spec.serial_console:
        raise ConsoleError(name, "the serial console is off (serialConsole: false)")
    return inst


@contextlib.contextmanager
def _attached(name: str, nodes: list[model.NodeSpec], declared: bool) -> Iterator[tuple[ActualInstance, str]]:
    """The live instance and a socket path on this machine for its serial console.

    A remote node's socket is forwarded over its SSH link, by an event loop on a thread of its own
    that keeps the link open while the (blocking) relay runs."""
    if all(n.ssh is None for n in nodes):
        inst = _checked(name, _running_instance(name, discovery.discover(nodes), declared))
        node = next(n for n in nodes if n.name == inst.node)
        yield inst, layout.instance_paths(node, inst.name).serial
        return
    import asyncio
    import queue
    import threading

    from reconciler import fleet

    Handed = tuple[ActualInstance, str, asyncio.AbstractEventLoop, asyncio.Event]
    handed: queue.Queue[Handed | BaseException] = queue.Queue()

    async def hold() -> None:
        async with fleet.opened(nodes) as opened:
            actual = await opened.discover()
            for line in fleet.unreachable_lines(opened):
                print(line, file=sys.stderr)
            inst = _checked(name, _running_instance(name, actual, declared))
            path = await opened.nodes[inst.node].serial_socket(inst.name)
            done = asyncio.Event()
            handed.put((inst, path, asyncio.get_running_loop(), done))
            await done.wait()

    def body() -> None:
        try:
            asyncio.run(hold())
        except BaseException as err:  # handed to the main thread, raised there
            handed.put(err)

    thread = threading.Thread(target=body, name="console-link", daemon=True)
    thread.start()
    got = handed.get()
    if isinstance(got, BaseException):
        raise got
    inst, path, loop, done = got
    try:
        yield inst, path
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(10.0)


def vnc_line(vnc: model.Vnc) -> str:
    return f"VNC listening on {vnc.bind}:{VNC_BASE_PORT + vnc.display} (display :{vnc.display})"


def _running_instance(name: str, actual: ActualState, declared: bool) -> ActualInstance:
    found = actual.find(name)
    if not found and actual.unreachable:
        lost = ", ".join(u.node for u in actual.unreachable)
        raise InstanceNotRunning(name, f"not on any reachable node ({lost} unreachable)")
    if not found:
        raise InstanceNotRunning(name, "stopped") if declared else InstanceNotFound(name)
    live = [i for i in found if i.state.has_process]
    if not live:
        raise InstanceNotRunning(name, actual_label(found[0]))
    return live[0]


def _connect(name: str, path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise ConsoleError(name, f"cannot connect to {path}: {err.strerror or err}") from None
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode while inside; the saved attributes come back however the block exits."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def relay(in_fd: int, out_fd: int, sock: socket.socket) -> str:
    """Copy in_fd -> sock and sock -> out_fd until Ctrl-] on in_fd or EOF on either; return why it ended."""
    while True:
        readable, _, _ = select.select([in_fd, sock.fileno()], [], [])
        if sock.fileno() in readable:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError as err:
                return f"console closed: {err.strerror}"
            if data == b"":
                return "console closed by QEMU"
            if data:
                _write_all(out_fd, data)
        if in_fd in readable:
            keys = os.read(in_fd, 1024)
            if not keys:
                return "input closed"
            if DETACH in keys:
                head = keys.split(DETACH, 1)[0]
                if head:
                    _send_all(sock, head)
                return "detached"
            _send_all(sock, keys)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as err:
            if err.errno == errno.EAGAIN:
                select.select([], [fd], [])
                continue
            raise
        view = view[n:]


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            select.select([], [sock], [])
            continue
        view = view[n:]
