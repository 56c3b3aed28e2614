"""The rig itself: real sshd hosts in namespaces, each with a private state directory and process table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.remote import netns_rig

pytestmark = [pytest.mark.e2e, pytest.mark.remote]


def ssh(rig: netns_rig.Rig, host: netns_rig.Host, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(rig.ssh_argv(host, *command), capture_output=True, text=True, timeout=30,
                          check=False)


def test_each_host_answers_over_ssh_at_its_own_address(rig: netns_rig.Rig) -> None:
    for host in rig.hosts:
        out = ssh(rig, host, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
        assert out.returncode == 0, out.stderr
        assert f"inet {host.address}/24" in out.stdout


def test_words_cross_as_data_not_as_shell(rig: netns_rig.Rig) -> None:
    out = ssh(rig, rig.hosts[0], "printf", "%s|", "a b", "$(id)", "x;y")
    assert out.stdout == "a b|$(id)|x;y|"


def test_state_directories_are_private_to_each_host(rig: netns_rig.Rig) -> None:
    h1, h2 = rig.hosts[:2]
    assert ssh(rig, h1, "touch", f"{netns_rig.STATE_ROOT}/only-on-h1").returncode == 0
    assert ssh(rig, h1, "ls", netns_rig.STATE_ROOT).stdout.split() == ["only-on-h1"]
    assert "only-on-h1" not in ssh(rig, h2, "ls", netns_rig.STATE_ROOT).stdout
    assert not (Path(netns_rig.STATE_ROOT) / "only-on-h1").exists()  # nor on the controller


def test_each_host_has_its_own_process_table(rig: netns_rig.Rig) -> None:
    out = ssh(rig, rig.hosts[0], "cat", "/proc/1/cmdline")
    assert "rig_init.py" in out.stdout  # PID 1 there is the host's init, not this machine's


def test_a_wrong_host_key_is_refused(rig: netns_rig.Rig, tmp_path: Path) -> None:
    h1, h2 = rig.hosts[:2]
    lines = Path(rig.known_hosts_file).read_text().splitlines()
    key_of_h2 = next(line for line in lines if line.startswith(h2.address + " ")).split(" ", 1)[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{h1.address} {key_of_h2}\n")
    argv = [a.replace(rig.known_hosts_file, str(wrong)) for a in rig.ssh_argv(h1, "true")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in out.stderr


def test_sshd_stopped_and_started_again(rig: netns_rig.Rig) -> None:
    h3 = rig.hosts[2]
    marker = ssh(rig, h3, "sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!").stdout.strip()
    rig.stop_sshd(h3)
    out = ssh(rig, h3, "true")
    assert out.returncode == 255 and "Connection refused" in out.stderr
    rig.start_sshd(h3)
    # The host lived on while its sshd was down: the background process is still there.
    assert ssh(rig, h3, "kill", "-0", marker).returncode == 0
    ssh(rig, h3, "kill", marker)
