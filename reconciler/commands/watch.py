"""`reconciler watch [PATH...]`: the daemon. Keeps every node's VMs matching the manifests, continuously.

Level-triggered: file changes (debounced), QEMU exits and guest power-offs, SIGHUP and a jittered
periodic resync all lead to the same pass (load, discover, plan, apply). Runs in the foreground, logs one
line per event to stderr, notifies systemd (Type=notify) and serves Prometheus metrics on request.
SIGTERM/SIGINT stop it; the VMs keep running. See docs/watch.md.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from reconciler.commands import argtypes
from reconciler.errors import ExitCode

if TYPE_CHECKING:
    import asyncio

    from reconciler.watch.logfmt import EventLog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="manifest files or directories (default: ./manifests)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="one line per event, as text (logfmt) or JSON (default text)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.add_argument("--metrics-address", metavar="HOST:PORT", type=_address,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    parser.add_argument("--status-file", metavar="FILE",
                        help="where to write the daemon's state for `status` "
                        "(default: <first node's stateDir>/watch-status.json)")
    parser.add_argument("--resync", type=argtypes.seconds, default=60.0, metavar="SECONDS",
                        help="reconcile at least this often, jittered by 10%% (default 60)")
    parser.add_argument("--debounce", type=argtypes.seconds, default=0.1, metavar="SECONDS",
                        help="quiet period after file events before reconciling (default 0.1)")
    parser.add_argument("--lock-timeout", type=argtypes.seconds, default=120.0, metavar="SECONDS",
                        help="wait at most this long for the node locks per pass (default 120)")
    parser.add_argument("--shutdown-grace", type=argtypes.seconds, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, let in-flight actions finish this long (default 30)")
    parser.add_argument("--backoff-base", type=argtypes.seconds, default=1.0, metavar="SECONDS",
                        help="crash-loop backoff: wait before the second automatic restart (default 1)")
    parser.add_argument("--backoff-max", type=argtypes.seconds, default=300.0, metavar="SECONDS",
                        help="crash-loop backoff: the longest wait (default 300)")
    parser.add_argument("--backoff-reset", type=argtypes.seconds, default=600.0, metavar="SECONDS",
                        help="crash-loop backoff: uptime after which the count starts over (default 600)")
    parser.add_argument("--parallel", type=argtypes.positive_int, default=4, metavar="N",
                        help="actions on different instances at once (default 4)")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:9109")
    return host.strip("[]") or "0.0.0.0", int(port)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from reconciler import manifest
    from reconciler.watch.backoff import BackoffPolicy
    from reconciler.watch.daemon import Daemon, DaemonConfig
    from reconciler.watch.debounce import Debounce
    from reconciler.watch.logfmt import EventLog, Level, LogFormat

    config = DaemonConfig(
        roots=tuple(args.paths or manifest.DEFAULT_PATHS),
        debounce=Debounce(args.debounce, max(2.0, args.debounce * 10)),
        resync_interval=max(args.resync, 0.5),
        lock_timeout=args.lock_timeout,
        shutdown_grace=args.shutdown_grace,
        backoff=BackoffPolicy(args.backoff_base, args.backoff_max, args.backoff_reset),
        status_file=args.status_file,
        metrics_address=args.metrics_address,
        parallel=args.parallel,
    )
    log = EventLog(LogFormat(args.log_format), Level(args.log_level))
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(Daemon(config, log).run())
        _cancel_leftovers(loop, log)
    finally:
        loop.close()
    return ExitCode.OK if code == 0 else ExitCode.ERROR


def _cancel_leftovers(loop: asyncio.AbstractEventLoop, log: EventLog, timeout: float = 5.0) -> None:
    """Like asyncio.run's cleanup, but bounded: a task stuck in a library (a QMP client that does not
    close) must not keep the daemon from exiting; the VMs do not depend on it."""
    import asyncio

    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        _, stuck = loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
        for t in stuck:
            log.warning("task-abandoned-at-exit", task=t.get_name())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
