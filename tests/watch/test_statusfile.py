"""The daemon's state file: round trip, tolerant reading, and the lines `status` prints (pure, exact);
and the one-line error for an unusable metrics address."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from reconciler.model import NodeSpec, SshSpec
from reconciler.watch import statusfile
from reconciler.watch.statusfile import BrokenFile, HeldRestart, WatchStatus

STATUS = WatchStatus(
    pid=4242, updated_at=1000.0, passes=7, last_success_at=990.0, revision="0123456789abcdef0123-dirty",
    manifest_errors=(BrokenFile("m/a.yaml", ("m/a.yaml:4:7: instance a: spec.memory: 'lots' is bad",), True,
                                900.0),
                     BrokenFile("m/new.yaml", ("m/new.yaml: invalid YAML: x",), False, 950.0)),
    pruning_suspended=True,
    backoff=(HeldRestart("vm1", 3, 1004.4), HeldRestart("old", 1, 500.0)),
    plan_errors=("node n1: too much memory",),
    failed_actions=("vm2: start failed: no kernel",),
    unreachable=("node r1: unreachable: root@198.18.0.11:22: connection refused",),
)


def test_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "watch-status.json")
    statusfile.write(path, STATUS)
    assert statusfile.read(path) == STATUS
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_unreadable_or_foreign_files_read_as_none(tmp_path: Path) -> None:
    assert statusfile.read(str(tmp_path / "absent.json")) is None
    (tmp_path / "bad.json").write_text("{not json")
    assert statusfile.read(str(tmp_path / "bad.json")) is None
    (tmp_path / "v9.json").write_text('{"format_version": 9}')
    assert statusfile.read(str(tmp_path / "v9.json")) is None


def test_default_path_is_the_first_node_by_name() -> None:
    nodes = [NodeSpec("b", "/srv/b"), NodeSpec("a", "/srv/a")]
    assert statusfile.default_path(nodes) == "/srv/a/watch-status.json"
    assert statusfile.default_path([]) is None


def test_default_path_skips_remote_nodes_whose_state_dir_is_on_their_host() -> None:
    remote = NodeSpec("a", "/var/lib/far", ssh=SshSpec("198.18.0.11"))
    assert statusfile.default_path([remote, NodeSpec("b", "/srv/b")]) == "/srv/b/watch-status.json"
    assert statusfile.default_path([remote]) is None  # --status-file then


def test_summary_lines() -> None:
    assert statusfile.summary_lines(STATUS, 1000.0, alive=True) == [
        "watch daemon (pid 4242, running): 7 passes, last successful reconcile 10s ago, "
        "revision 0123456789ab-dirty",
        "  2 broken manifest files; pruning suspended",
        "  m/a.yaml: last good version in use",
        "    m/a.yaml:4:7: instance a: spec.memory: 'lots' is bad",
        "  m/new.yaml: ignored (no good version yet)",
        "    m/new.yaml: invalid YAML: x",
        "  vm1: crash loop: backing off after 3 restarts, next try in 4s",
        "  node r1: unreachable: root@198.18.0.11:22: connection refused",
        "  plan error: node n1: too much memory",
        "  failed: vm2: start failed: no kernel",
    ]


def test_row_details_only_for_holds_in_force() -> None:
    assert statusfile.row_details(STATUS, 1000.0) == {
        "vm1": "crash loop: backing off after 3 restarts, next try in 4s"}
    assert statusfile.row_details(STATUS, 2000.0) == {}


def test_daemon_alive() -> None:
    assert statusfile.daemon_alive(WatchStatus(pid=os.getpid(), updated_at=0.0, passes=0))
    assert not statusfile.daemon_alive(WatchStatus(pid=os.getpid(), updated_at=0.0, passes=0, stopped=True))


def test_metrics_address_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = cli.main(["watch", str(tmp_path), "--metrics-address", f"127.0.0.1:{port}"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"error: metrics address 127.0.0.1:{port}: Address already in use\n")


def test_status_reads_a_custom_status_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler import cli

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "node.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Node\nmetadata:\n  name: n1\n"
        f"spec:\n  stateDir: {tmp_path / 'state'}\n")
    custom = tmp_path / "elsewhere.json"
    statusfile.write(str(custom), STATUS)
    assert cli.main(["status", "--json", "--status-file", str(custom), str(tmp_path / "m")]) == 0
    assert '"passes": 7' in capsys.readouterr().out
    assert cli.main(["status", "--status-file", str(tmp_path / "absent.json"), str(tmp_path / "m")]) == 64
    assert capsys.readouterr().err == (
        f"error: --status-file {tmp_path / 'absent.json'}: not a readable watch status file\n")
