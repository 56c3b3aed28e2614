"""Shared fixtures and helpers for tests that boot the real test guest under QEMU (TCG).

Why: every end-to-end test needs the same three things -- the guest (built once, cached outside the tree by
tests/guest/build.py), a QEMU binary, and a way to wait for a line on the guest's serial console under a
deadline without sleep-polling. They live here so each test author does not reinvent them.

Fixtures:
    guest        (session) `Guest`: kernel + initrd paths, the ready line, `append()` for -append and
                 `argv()` for a plain QEMU command line (with memory/CPU hotplug room if asked),
                 `agent_args()` for the guest agent's virtio-serial port. Builds the guest on first use
                 (~30 s cold, then cached).
    qemu_binary  (session) path of qemu-system-x86_64 ($RECONCILER_QEMU overrides).

Helpers (import with `from conftest import SerialListener, SerialLog, LineTimeout`):
    SerialListener(path)   listen on a unix socket BEFORE launching QEMU; QEMU connects to it as a client
                           (`Guest.serial_args(path)`), so no output is lost and nothing polls for a socket.
                           `.accept(timeout)` returns a `SerialConsole`.
    SerialConsole          `.wait_for(needle, timeout)` -> the first new line containing needle (or matching
                           a compiled regex); `.lines` is the whole transcript so far.
    SerialLog(path)        the same `.wait_for`/`.lines` for a serial log file (`-chardev file,path=...`),
                           woken by inotify (watchdog); `wait_for_line_in_file(path, needle, timeout)`.
    LineTimeout            raised (an AssertionError) on deadline or EOF, with the transcript's tail.
    GuestReport            the guest's view, parsed from its `reconciler-guest: report ...` line (all
                           the guest's lines are documented in tests/guest/build.py);
                           `SerialConsole.send("report\n")` asks the guest for one.
    wait_for_report(source, accept, timeout)  the first new report (from a SerialConsole or SerialLog)
                           that accept(GuestReport) takes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

READY_LINE = "reconciler-guest: ready"
TICK_PREFIX = "reconciler-guest: tick"
REPORT_PREFIX = "reconciler-guest: report "
SEED_PREFIX = "reconciler-guest: seed "
AGENT_STARTED_PREFIX = "reconciler-guest: agent started"
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
# With room for memory hotplug (-m ...,maxmem=) QEMU puts the hotplug area above 4 GiB, so the kernel sets
# up a 64 MiB DMA bounce buffer and a 128 MiB guest runs out of memory while booting; this keeps it at 2 MiB.
MEMORY_HOTPLUG_CMDLINE = "swiotlb=1024"

Needle = str | re.Pattern[str]


def _load_build_module() -> ModuleType:
    # By path: tests/ is not a package, and the name `guest` is too generic to put on sys.path.
    path = Path(__file__).parent / "guest" / "build.py"
    spec = importlib.util.spec_from_file_location("reconciler_test_guest_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Guest:
    """The built test guest. Its /init reads `reconciler.tag=` and `reconciler.ignore_acpi=1`."""

    kernel: Path
    initrd: Path
    ready_line: str = READY_LINE
    tick_prefix: str = TICK_PREFIX  # "reconciler-guest: tick N", once a second after the ready line
    kernel_package: str = ""  # e.g. "linux-image-6.1.0-56-cloud-amd64=6.1.192-2"

    def ready_line_for(self, tag: str | None) -> str:
        return f"{self.ready_line} {tag}" if tag else self.ready_line

    def append(
        self,
        *,
        tag: str | None = None,
        ignore_acpi: bool = False,
        memory_hotplug: bool = False,
        extra: Sequence[str] = (),
    ) -> str:
        """The kernel command line (QEMU -append) for this guest (see MEMORY_HOTPLUG_CMDLINE)."""
        if tag is not None and not re.fullmatch(r"[\w.:-]+", tag):
            raise ValueError(f"guest tag {tag!r}: use letters, digits and . _ : - only")
        words = ["console=ttyS0", "quiet", "panic=-1"]
        words += [f"reconciler.tag={tag}"] if tag else []
        words += ["reconciler.ignore_acpi=1"] if ignore_acpi else []
        words += [MEMORY_HOTPLUG_CMDLINE] if memory_hotplug else []
        return " ".join([*words, *extra])

    def argv(
        self,
        qemu: str,
        *,
        append: str | None = None,
        memory_mib: int = 128,
        max_memory_mib: int | None = None,
        memory_slots: int = 2,
        cpus: int = 1,
        max_cpus: int | None = None,
    ) -> list[str]:
        """A minimal plain-QEMU command line booting this guest; add serial/QMP args to it.

        max_memory_mib (with memory_slots) and max_cpus leave room for memory and CPU hotplug; with
        max_memory_mib, pass an append(memory_hotplug=True) (the default append does).
        """
        memory = str(memory_mib)
        if max_memory_mib is not None:
            memory = f"{memory_mib}M,slots={memory_slots},maxmem={max_memory_mib}M"
        smp = ["-smp", f"{cpus},maxcpus={max_cpus}"] if max_cpus is not None else []
        return [
            qemu, "-accel", "tcg", "-m", memory, *smp, "-nodefaults", "-no-user-config",
            "-display", "none", "-kernel", str(self.kernel), "-initrd", str(self.initrd),
            "-append", self.append(memory_hotplug=max_memory_mib is not None) if append is None else append,
        ]  # fmt: skip

    @staticmethod
    def agent_args(socket_path: Path, chardev_id: str = "agent0") -> list[str]:
        """QEMU args for the guest agent's virtio-serial port, a client of a listener on socket_path."""
        return [
            "-device", "virtio-serial", "-chardev", f"socket,id={chardev_id},path={socket_path}",
            "-device", f"virtserialport,chardev={chardev_id},name={AGENT_PORT_NAME}",
        ]  # fmt: skip

    @staticmethod
    def serial_args(socket_path: Path, chardev_id: str = "serial0") -> list[str]:
        """QEMU args for ttyS0 as a client of a `SerialListener` on socket_path."""
        return ["-chardev", f"socket,id={chardev_id},path={socket_path}", "-serial", f"chardev:{chardev_id}"]


@pytest.fixture(scope="session")
def guest() -> Guest:
    build = _load_build_module()
    try:
        built = build.ensure_guest()
    except build.GuestBuildError as e:
        pytest.fail(f"cannot build the test guest: {e}", pytrace=False)
    pkg = built.kernel_package
    return Guest(kernel=built.kernel, initrd=built.initrd, kernel_package=f"{pkg.name}={pkg.version}")


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    name = os.environ.get("RECONCILER_QEMU", "qemu-system-x86_64")
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"QEMU binary {name!r} not found on PATH (run .ci/setup)", pytrace=False)
    return found


# ------------------------------------------------------------------------------------ serial lines


class LineTimeout(AssertionError):
    """The awaited line did not come before the deadline (or the stream ended first)."""

    def __init__(self, needle: Needle, timeout: float, lines: Sequence[str], eof: bool) -> None:
        what = needle.pattern if isinstance(needle, re.Pattern) else needle
        why = "stream ended" if eof else f"{timeout:.1f}s passed"
        tail = "\n".join(f"  | {ln}" for ln in lines[-15:]) or "  | (no output)"
        super().__init__(f"no line matching {what!r}: {why}; last lines:\n{tail}")


def _matches(needle: Needle, line: str) -> bool:
    return bool(needle.search(line)) if isinstance(needle, re.Pattern) else needle in line


class _LineBuffer:
    """Splits a byte stream into lines; remembers all of them and how far the reader has looked."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = b""
        self._seen = 0

    def feed(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines += [c.decode(errors="replace").rstrip("\r") for c in complete]

    def next_match(self, needle: Needle) -> str | None:
        """The first not-yet-seen line matching needle; lines before it count as seen."""
        while self._seen < len(self.lines):
            line = self.lines[self._seen]
            self._seen += 1
            if _matches(needle, line):
                return line
        return None


class SerialConsole:
    """A connected serial stream; waits for lines with a deadline by blocking reads (no polling)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = _LineBuffer()
        self.eof = False

    @property
    def lines(self) -> list[str]:
        return self._buf.lines

    def wait_for(self, needle: Needle, timeout: float) -> str:
        """Return the first line after the previous match that contains needle (or matches a regex)."""
        deadline = time.monotonic() + timeout
        while (found := self._buf.next_match(needle)) is None:
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0:
                raise LineTimeout(needle, timeout, self.lines, self.eof)
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            self.eof = not data
            self._buf.feed(data)
        return found

    def send(self, text: str) -> None:
        """Type text on the guest's console (a line "report\\n" asks the guest for a report)."""
        self._sock.sendall(text.encode())

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialListener:
    """A unix socket QEMU's serial chardev connects to (see `Guest.serial_args`). Create it first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(1)

    def accept(self, timeout: float) -> SerialConsole:
        self._sock.settimeout(timeout)
        try:
            conn, _ = self._sock.accept()
        except TimeoutError:
            raise LineTimeout(f"<QEMU connecting to {self.path}>", timeout, [], eof=False) from None
        finally:
            self._sock.close()
        return SerialConsole(conn)

    def close(self) -> None:
        self._sock.close()


class SerialLog:
    """A growing serial log file (QEMU `-chardev file,...`) read like `SerialConsole`, woken by inotify.

    The file need not exist yet. Each `wait_for` continues after the previous match.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self._buf = _LineBuffer()
        self._offset = 0

    @property
    def lines(self) -> list[str]:
        return self._buf.lines

    def _read_new(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        self._buf.feed(data)

    def wait_for(self, needle: Needle, timeout: float) -> str:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        changed = threading.Event()
        target = str(self.path)

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if target in (str(event.src_path), str(getattr(event, "dest_path", ""))):
                    changed.set()

        observer = Observer()
        observer.schedule(_Handler(), str(self.path.parent))
        observer.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                changed.clear()  # before reading, so a write during the read still wakes us
                self._read_new()
                if (found := self._buf.next_match(needle)) is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LineTimeout(needle, timeout, self.lines, eof=False)
                changed.wait(remaining)
        finally:
            observer.stop()
            observer.join()


def wait_for_line_in_file(path: Path, needle: Needle, timeout: float) -> str:
    """The first line of the file containing needle (or matching a regex), waiting up to timeout."""
    return SerialLog(path).wait_for(needle, timeout)


# ------------------------------------------------------------------------------------ guest report


@dataclass(frozen=True)
class GuestReport:
    """`reconciler-guest: report mem_kib=N cpus=N blk=name:bytes,... nics=name:mac,...` parsed."""

    mem_kib: int
    cpus: int
    blk: dict[str, int]
    nics: dict[str, str]

    @classmethod
    def parse(cls, line: str) -> GuestReport:
        fields = dict(word.split("=", 1) for word in line.split(REPORT_PREFIX, 1)[1].split())
        blk = dict(item.rsplit(":", 1) for item in fields["blk"].split(",") if item)
        nics = dict(item.split(":", 1) for item in fields["nics"].split(",") if item)
        return cls(int(fields["mem_kib"]), int(fields["cpus"]), {k: int(v) for k, v in blk.items()}, nics)


class _LineSource(Protocol):
    def wait_for(self, needle: Needle, timeout: float) -> str: ...


def wait_for_report(
    source: _LineSource, accept: Callable[[GuestReport], bool], timeout: float
) -> GuestReport:
    """The first new report line that `accept` takes, from a SerialConsole or SerialLog, by a deadline."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        try:
            line = source.wait_for(REPORT_PREFIX, max(deadline - time.monotonic(), 0.0))
        except LineTimeout as e:
            raise AssertionError(f"no accepted guest report in {timeout:.1f}s: {seen}\n{e}") from None
        seen.append(line)
        if accept(report := GuestReport.parse(line)):
            return report
