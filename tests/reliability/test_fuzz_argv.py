"""Fuzzing the argv builder: hostile strings either raise ArgvError or survive QEMU's option parsing.

For random specs and nodes whose strings carry commas, '=', spaces, quotes, backslashes, unicode,
control characters and long values, `build_launch` must raise ArgvError (one line) or give an argv in
which (1) every `key=value,...` string the builder joined splits back, under the QEMU model
(qemu_model.py), into exactly the intended head, keys and values, and (2) every value that came from
the spec is found where it belongs (block node filenames, chardev paths, -kernel, -pidfile, the hook
script, the extra args verbatim at the end), whether or not the builder went through qemuopts.join.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from reconciler import qemuopts
from reconciler.argv import DEFAULT_IFUP, Launch, build_launch
from reconciler.errors import ArgvError
from reconciler.model import (
    Accelerator,
    CacheMode,
    Disk,
    DiskBus,
    DiskFormat,
    InstanceSpec,
    KernelBoot,
    Nic,
    NicMode,
    NodeSpec,
    Vnc,
)

from .profiles import fuzz
from .qemu_model import OPTIONS, Pairs, parse_option, parsed_options

CORPUS = Path(__file__).parent / "corpus" / "argv"

SPECIAL = [*",,,==  '\"\\;$`*?[]{}()<>|&#~!:@%^+./-_", "é", "€", "🙂", "\u202e", "\xa0", "ß", "\ufeff"]
CONTROL = ["\n", "\t", "\r", "\x00", "\x7f", "\x1b"]


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` 7 times in 8: most examples should get past the first check and reach the parser model."""
    return st.sampled_from(range(8)).flatmap(lambda n: bad if n == 7 else good)


hostile: st.SearchStrategy[str] = st.text(
    st.sampled_from(SPECIAL) | st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
maybe_control = st.one_of(hostile, hostile.map(lambda s: s + "\n"),
                          st.tuples(hostile, st.sampled_from(CONTROL), hostile).map("".join))
long_text = st.integers(200, 3000).map(lambda n: "/" + ",=" * (n // 2))
path = mostly(st.one_of(hostile.map(lambda s: "/" + s), long_text, st.just("/dev/,x")),
              st.one_of(maybe_control.map(lambda s: "/" + s), hostile))
MACS = st.sampled_from(["53:54:00:00:00:01", "52:54:00:AA:BB:CC"])


@st.composite
def specs(draw: st.DrawFn) -> InstanceSpec:
    kernel = None
    if draw(st.booleans()):
        root = mostly(st.sampled_from(["", "/dev/vda"]), maybe_control)
        kernel = KernelBoot(kernel=draw(path), root=draw(root),
                            initrd=draw(st.one_of(st.none(), path)),
                            cmdline=draw(mostly(st.one_of(st.just(""), hostile), maybe_control)))
    disks = tuple(
        Disk(path=draw(path), format=draw(st.sampled_from(list(DiskFormat))),
             bus=draw(st.sampled_from(list(DiskBus))), read_only=draw(st.booleans()),
             cache=draw(st.sampled_from(list(CacheMode))), boot=i == 0 and kernel is None)
        for i in range(draw(st.integers(0, 3))))
    nics = tuple(
        Nic(mac=draw(mostly(st.just("52:54:00:12:34:56"), MACS)), mode=draw(st.sampled_from(list(NicMode))),
            bridge=draw(mostly(st.just("br0"), hostile)), hook=draw(st.one_of(st.none(), path)),
            ip=draw(mostly(st.none(), hostile)))
        for _ in range(draw(st.integers(0, 2))))
    vnc = st.builds(Vnc, bind=mostly(st.sampled_from(["127.0.0.1", "::1"]), hostile),
                    display=mostly(st.integers(0, 99), st.integers(-1, 70000)))
    cpu = mostly(st.sampled_from([None, "qemu64,+ssse3", "max"]), st.one_of(st.just("host"), hostile))
    return InstanceSpec(
        name=draw(mostly(st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True), hostile)),
        memory_mib=draw(mostly(st.sampled_from([1, 128]), st.just(0))),
        vcpus=draw(mostly(st.sampled_from([1, 4]), st.just(0))),
        disks=disks, kernel=kernel, nics=nics,
        acpi=draw(st.booleans()), serial_console=draw(st.booleans()),
        vnc=draw(st.one_of(st.none(), vnc)),
        machine=draw(mostly(st.sampled_from(["pc", "q35"]), hostile)),
        cpu_model=draw(cpu),
        extra_args=tuple(draw(st.lists(maybe_control, max_size=3))),
    )


@st.composite
def nodes(draw: st.DrawFn) -> NodeSpec:
    state = draw(mostly(st.one_of(st.just("/tmp/rc"), hostile.map(lambda s: "/tmp/" + s[:8])),
                        st.one_of(maybe_control, st.just("/tmp/" + "d" * 90))))
    return NodeSpec(name="n1", state_dir=state, accelerator=draw(st.sampled_from(list(Accelerator))),
                    qemu_binary=draw(mostly(st.just("qemu-system-x86_64"), hostile)))


# --- the check -------------------------------------------------------------------------------------


def _event(what: str) -> None:
    if currently_in_test_context():  # the corpus replays this check outside Hypothesis
        event(what)


@contextlib.contextmanager
def recording_joins() -> Iterator[list[tuple[str | None, list[tuple[str, str]], str]]]:
    """Record every qemuopts.join(head, pairs) the builder makes, with its result."""
    calls: list[tuple[str | None, list[tuple[str, str]], str]] = []
    real = qemuopts.join

    def join(head: str | None, pairs: Any) -> str:
        pairs = list(pairs)
        out = real(head, pairs)
        calls.append((head, pairs, out))
        return out

    with mock.patch.object(qemuopts, "join", join):
        yield calls


def option_values(argv: Sequence[str], option: str) -> list[str]:
    return [v for o, v in itertools.pairwise(argv) if o == option]


def pairs_of(argv: Sequence[str], option: str) -> list[dict[str, str]]:
    return [dict(parse_option(option, v)) for v in option_values(argv, option)]


def check_round_trip(spec: InstanceSpec, node: NodeSpec) -> Launch | None:
    """The property: ArgvError, or an argv that QEMU (as modelled) reads as intended."""
    with recording_joins() as joins:
        try:
            launch = build_launch(spec, node)
        except ArgvError as err:
            assert "\n" not in str(err), str(err)
            _event(f"ArgvError: {err.field.split('[')[0]}")
            return None
    _event("accepted")
    argv = launch.argv
    assert all("\0" not in a for a in argv)
    # (1) every joined string splits back into exactly what was joined
    for head, pairs, joined in joins:
        options = [o for o, v in itertools.pairwise(argv) if v == joined and o in OPTIONS]
        if not options:
            continue  # a piece of a larger value (-vnc host), checked below
        implied = OPTIONS[options[0]][1]
        expected: Pairs = ([(implied, head)] if head is not None else []) + pairs
        assert parse_option(options[0], joined) == expected, joined
    # every parsed option string parses, with no key given twice
    for option, pairs in parsed_options(argv):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), (option, pairs)
    # (2) the spec's values are where they belong
    assert argv[0] == node.qemu_binary
    assert dict(parse_option("-name", option_values(argv, "-name")[0])) == {"guest": spec.name}
    assert option_values(argv, "-pidfile") == [launch.paths.pidfile]
    files = {p["node-name"]: p["filename"] for p in pairs_of(argv, "-blockdev") if "filename" in p}
    assert files == {f"disk{i}-file": d.path for i, d in enumerate(spec.disks)}
    chardevs = {p["id"]: p for p in pairs_of(argv, "-chardev")}
    assert chardevs["qmp"]["path"] == launch.paths.qmp
    assert chardevs["qmp-watch"]["path"] == launch.paths.qmp_watch
    if spec.serial_console:
        assert chardevs["serial0"]["path"] == launch.paths.serial
        assert chardevs["serial0"]["logfile"] == launch.paths.serial_log
    scripts = [p["script"] for p in pairs_of(argv, "-netdev") if "script" in p]
    assert scripts == [DEFAULT_IFUP] * sum(n.mode is NicMode.BRIDGE for n in spec.nics)
    if spec.kernel is not None:
        assert option_values(argv, "-kernel") == [spec.kernel.kernel]
        assert option_values(argv, "-initrd") == ([spec.kernel.initrd] if spec.kernel.initrd else [])
    if spec.extra_args:
        assert argv[-len(spec.extra_args):] == spec.extra_args
    return launch


@fuzz(800)
@given(specs(), nodes())
def test_argv_round_trips_through_qemu_option_parsing(spec: InstanceSpec, node: NodeSpec) -> None:
    check_round_trip(spec, node)


@fuzz(300)
@given(st.lists(hostile, min_size=1, max_size=3))
def test_hostile_disk_paths_always_round_trip(names: list[str]) -> None:
    """Absolute printable paths are never rejected, so the round trip must hold for every one."""
    spec = InstanceSpec(name="d", memory_mib=64,
                        disks=tuple(Disk(path=f"/srv/{n}") for n in names))
    assert check_round_trip(spec, NodeSpec(name="n1", state_dir="/tmp/rc")) is not None


# --- the corpus ------------------------------------------------------------------------------------


def spec_from_corpus(data: dict[str, Any]) -> tuple[InstanceSpec, NodeSpec]:
    """corpus/argv/*.json: {"disks": [paths], "state_dir": str, "kernel": path, "extra_args": [...]}."""
    kernel = KernelBoot(kernel=data["kernel"], root="/dev/vda") if "kernel" in data else None
    spec = InstanceSpec(name=data.get("name", "c"), memory_mib=64, kernel=kernel,
                        disks=tuple(Disk(path=p) for p in data.get("disks", ())),
                        extra_args=tuple(data.get("extra_args", ())))
    return spec, NodeSpec(name="n1", state_dir=data.get("state_dir", "/tmp/rc"))


CASES = sorted(CORPUS.glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_argv_corpus(path: Path) -> None:
    data = json.loads(path.read_text())
    spec, node = spec_from_corpus(data)
    launch = check_round_trip(spec, node)
    assert (launch is not None) == data.get("accepted", True)
