"""Argument handling of `reconciler start|stop|restart|reboot` and `reconciler qmp`, through `cli.main`
against manifests on this machine but no QEMU: usage errors (64), an unknown name (1, one line), the
refusal without a terminal and without --yes, the lock timeout (4), and ARGS-JSON parsing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from executor.kit import World, make_world

from reconciler import lock
from reconciler.commands.monitor import split_rest
from reconciler.errors import UsageError


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path, "/nonexistent/vmlinuz", "/nonexistent/initrd") as w:
        w.instance("man", "node-a", runStrategy="Manual")
        yield w


@pytest.mark.parametrize("argv", [
    ["start"],  # no NAME at all
    ["reboot", "--force", "man"],  # --force belongs to stop and restart
    ["start", "--force", "man"],
    ["stop", "--lock-timeout", "-1", "man"],
])
def test_usage_errors_exit_64(world: World, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 64
    assert "error:" in capsys.readouterr().err


def test_only_paths_and_no_name_is_a_usage_error(world: World) -> None:
    res = world.cli("stop", "--yes")
    assert res.code == 64
    assert res.err == "error: stop: name at least one instance (only manifest paths given)\n"


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "reboot"])
def test_an_unknown_name_is_one_line_and_exit_1(world: World, verb: str) -> None:
    res = world.cli(verb, "--yes", "man", "nope")
    assert res.code == 1 and res.out == ""
    assert res.err == "error: instance nope: not declared in the manifests and not found on any node\n"


def test_without_a_terminal_and_without_yes_it_refuses_after_showing_the_plan(world: World) -> None:
    res = world.cli("start", "man")  # pytest's stdin is not a terminal
    assert res.code == 64
    assert "+ man on node-a" in res.out
    assert res.err == ("error: refusing to start without confirmation: stdin is not a terminal "
                       "(use --yes)\n")
    assert world.qemu_pids("man") == []


def test_nothing_to_do_needs_no_confirmation(world: World) -> None:
    res = world.cli("stop", "man")
    assert res.code == 0, res.text
    assert res.out == "man: already stopped (never started); nothing to do\n"


def test_a_refused_verb_is_a_plan_error_exit_1(world: World) -> None:
    res = world.cli("reboot", "--yes", "man")
    assert res.code == 1
    assert "x instance man: not running (never started); `reconciler start man` starts it" in res.out
    assert res.err == "the plan has errors; nothing done (reboot)\n"


def test_a_held_node_lock_times_out_with_exit_4(world: World) -> None:
    held = lock.NodeLock(str(world.root / "node-a" / "node.lock"), "apply")
    (world.root / "node-a").mkdir(exist_ok=True)
    held.acquire(0)
    try:
        res = world.cli("stop", "--yes", "--lock-timeout", "0", "man")
        assert res.code == 4
        assert res.err.startswith(f"error: node lock {world.root}/node-a/node.lock is held by PID ")
        qmp = world.cli("qmp", "--lock-timeout", "0", "man", "query-status")
        assert qmp.code == 4
    finally:
        held.release()


def test_qmp_bad_args_json_is_a_usage_error(world: World) -> None:
    res = world.cli("qmp", "man", "query-status", '{"a": ')
    assert res.code == 64
    assert res.err.startswith("error: ARGS-JSON '{\"a\": ': not valid JSON (Expecting value at column 7)")
    res = world.cli("qmp", "man", "query-status", "[1, 2]")
    assert res.code == 64
    assert res.err == ("error: ARGS-JSON '[1, 2]': must be a JSON object, e.g. "
                       "'{\"device\": \"ide0-cd0\"}'\n")


def test_qmp_of_an_unknown_or_stopped_instance(world: World) -> None:
    res = world.cli("qmp", "nope", "query-status")
    assert (res.code, res.err) == (1, "error: instance nope: not declared in the manifests and not found "
                                      "on any node\n")
    res = world.cli("qmp", "man", "query-status")
    assert (res.code, res.err) == (1, "error: instance man is not running (never started)\n")
    res = world.cli("qmp", "--node", "node-z", "man", "query-status")
    assert (res.code, res.err) == (64, "error: --node node-z: not declared in the manifests\n")


@pytest.mark.parametrize(("rest", "existing", "expected"), [
    ([], set(), (None, [])),
    (["manifests"], {"manifests"}, (None, ["manifests"])),
    (['{"device": "ide0"}'], set(), ({"device": "ide0"}, [])),
    (['{"path": "/machine"}', "m1", "m2"], {"m1", "m2"}, ({"path": "/machine"}, ["m1", "m2"])),
    (["{}", "manifests"], {"manifests"}, ({}, ["manifests"])),
    (["m1", '{"a": 1}'], {"m1"}, (None, ["m1", '{"a": 1}'])),  # ARGS-JSON comes right after COMMAND
])
def test_split_rest(rest: list[str], existing: set[str], expected: object) -> None:
    assert split_rest(rest, existing.__contains__) == expected


@pytest.mark.parametrize("text", ["nonexistent-dir", "1", '"x"', "null"])
def test_split_rest_refuses_what_is_no_object(text: str) -> None:
    with pytest.raises(UsageError):
        split_rest([text], lambda _: False)
