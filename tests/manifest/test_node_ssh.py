"""A Node's `ssh`: defaults, one exact line per bad field, and state directories unique per machine."""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import manifest, model
from tests.manifest.helpers import problem_lines, write_tree


def node(name: str = "node-r", ssh: str = "  ssh: {}\n", state_dir: str = "/var/lib/reconciler",
         address: str = "198.18.0.12") -> str:
    return f"""\
apiVersion: reconciler/v1
kind: Node
metadata:
  name: {name}
spec:
  address: {address}
  stateDir: {state_dir}
  accelerator: tcg
{ssh}"""


def test_defaults_host_is_the_address_port_22_user_root(tmp_path: Path) -> None:
    write_tree(tmp_path, {"m/n.yaml": node()})
    result = manifest.load([str(tmp_path / "m")])
    assert result.problems == ()
    assert result.desired is not None
    spec = result.desired.nodes["node-r"]
    assert spec.ssh == model.SshSpec(host="198.18.0.12")
    assert spec.ssh.port == 22 and spec.ssh.user == "root" and spec.ssh.agent_command == ("reconciler", "agent")
    assert spec.machine == "198.18.0.12:22"


def test_every_field(tmp_path: Path) -> None:
    ssh = """\
  ssh:
    host: h2.example
    port: 2222
    user: ops
    identityFile: /etc/reconciler/id_ed25519
    knownHostsFile: /etc/reconciler/known_hosts
    connectTimeout: 2500ms
    agentCommand: [/opt/reconciler/bin/reconciler, agent]
    persist: 5m
"""
    write_tree(tmp_path, {"m/n.yaml": node(ssh=ssh)})
    result = manifest.load([str(tmp_path / "m")])
    assert result.desired is not None, result.problems
    assert result.desired.nodes["node-r"].ssh == model.SshSpec(
        host="h2.example", port=2222, user="ops", identity_file="/etc/reconciler/id_ed25519",
        known_hosts_file="/etc/reconciler/known_hosts", connect_timeout=2.5,
        agent_command=("/opt/reconciler/bin/reconciler", "agent"), persist=300.0)


def test_persist_defaults_to_60s_and_0_turns_the_keeper_off(tmp_path: Path) -> None:
    write_tree(tmp_path, {"m/a.yaml": node(), "m/b.yaml": node("node-s", "  ssh: {persist: 0}\n",
                                                               address="198.18.0.13")})
    result = manifest.load([str(tmp_path / "m")])
    assert result.desired is not None, result.problems
    assert [result.desired.nodes[n].ssh.persist for n in ("node-r", "node-s")] == [60.0, 0.0]  # type: ignore[union-attr]


CASES = [
    pytest.param(node(ssh="  ssh: {port: 0}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.port: 0 is below the minimum of 1"], id="port_zero"),
    pytest.param(node(ssh="  ssh: {port: 70000}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.port: 70000 is above the maximum of 65535"], id="port_big"),
    pytest.param(node(ssh="  ssh: {identityFile: .ssh/id_ed25519}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.identityFile: identityFile '.ssh/id_ed25519' must be an absolute path"],
                 id="identity_relative"),
    pytest.param(node(ssh="  ssh: {knownHostsFile: known_hosts}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.knownHostsFile: knownHostsFile 'known_hosts' must be an absolute path"],
                 id="known_hosts_relative"),
    pytest.param(node(ssh="  ssh: {connectTimeout: 0s}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.connectTimeout: 0s is out of range (0.1s to 600s)"],
                 id="timeout_zero"),
    pytest.param(node(ssh="  ssh: {persist: 25h}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.persist: 90000s is out of range (0s to 86400s)"],
                 id="persist_too_long"),
    pytest.param(node(ssh="  ssh: {persist: soon}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.persist: 'soon' is not a duration like 30s, 2m or 300ms"],
                 id="persist_not_a_duration"),
    pytest.param(node(ssh="  ssh: {acceptAnyKey: true}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.acceptAnyKey: unknown field; expected one of agentCommand, connectTimeout, host, identityFile, knownHostsFile, persist, port, user"],
                 id="no_option_to_accept_any_key"),
    pytest.param(node(ssh="  ssh: {host: 'a b'}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.host: 'a b' is not valid here: it contains characters that are not allowed"],
                 id="host_with_space"),
    pytest.param(node(ssh="  ssh: {agentCommand: []}\n"),
                 ["m/x.yaml:9:9: node node-r: spec.ssh.agentCommand: [] should be non-empty"], id="agent_empty"),
    pytest.param(node(state_dir="state/r"),
                 ["m/x.yaml:7:3: node node-r: spec.stateDir: stateDir 'state/r' of a remote node must be an absolute path on that host"],
                 id="remote_state_dir_relative"),
]


@pytest.mark.parametrize(("content", "expected"), CASES)
def test_bad_ssh_fields_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str,
                                      expected: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/x.yaml": content})
    assert problem_lines(["m"]) == expected


def test_state_dirs_are_unique_per_machine_not_across_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/a.yaml": node("r1", address="198.18.0.11"),
                          "m/b.yaml": node("r2", address="198.18.0.12")})
    assert problem_lines(["m"]) == []
    write_tree(tmp_path, {"m/b.yaml": node("r2", address="198.18.0.12", ssh="  ssh: {host: 198.18.0.11}\n")})
    assert problem_lines(["m"]) == [
        "m/b.yaml:7:3: node r2: spec.stateDir: stateDir '198.18.0.11:22:/var/lib/reconciler' is also used by node r1 (m/a.yaml:1:1)"
    ]
