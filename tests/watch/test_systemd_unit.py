"""contrib/reconciler-watch.service: installed as docs/watch.md says (the documented `sed`, run as
written), it passes `systemd-analyze verify`, keeps the sandboxing `systemd-analyze security` scored,
names docs that exist, and its ExecStart really starts the daemon, which sends READY=1 to
$NOTIFY_SOCKET and stops on SIGTERM. systemd is not PID 1 here, so the unit is not started by systemd
itself; the analyzer checks run when systemd-analyze is installed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "reconciler-watch.service"
DOCS = ROOT / "docs" / "watch.md"
READY_TIMEOUT = 60.0
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian package systemd)")


def documented_install(tmp_path: Path) -> Path:
    """Run the docs' `sed` command as written, from the checkout root, into tmp_path instead of /etc."""
    block = re.search(r"```sh\n(sed .*?)\n(?:systemctl.*)?```", DOCS.read_text(), re.S)
    assert block is not None, "docs/watch.md: no install command"
    header = "".join(line.lstrip("#") for line in UNIT.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    assert " ".join(block.group(1).split()) in " ".join(header.split()), \
        "the unit's header and docs/watch.md must show the same command"
    command = block.group(1).replace("/etc/systemd/system/", f"{tmp_path}/")
    subprocess.run(["bash", "-c", command], cwd=ROOT, check=True, timeout=30)
    return tmp_path / "reconciler-watch.service"


def directive(text: str, key: str) -> str:
    joined = re.sub(r"\\\n\s*", " ", text)
    values = re.findall(rf"^{key}=(.*)$", joined, re.M)
    assert len(values) == 1, (key, values)
    return values[0].strip()


def test_installed_unit_names_a_script_and_docs_that_exist(tmp_path: Path) -> None:
    text = documented_install(tmp_path).read_text()
    assert not re.findall(r"@[A-Z]+@", text), "a placeholder is left"
    doc = directive(text, "Documentation")
    assert doc.startswith("file://") and Path(doc.removeprefix("file://")).is_file(), doc
    exe = shlex.split(directive(text, "ExecStart"))[0]
    assert os.path.isabs(exe) and os.access(exe, os.X_OK), exe


@needs_analyze
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    path = documented_install(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and "reconciler-watch" not in done.stderr, done.stderr
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=50", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    for kept_off in ("MemoryDenyWriteExecute", "PrivateDevices", "DeviceAllow", "DevicePolicy", "PrivateTmp"):
        assert not re.search(rf"^{kept_off}=", path.read_text(), re.M), f"{kept_off} breaks QEMU"


def test_exec_start_starts_the_daemon_and_notifies_ready(tmp_path: Path) -> None:
    argv = shlex.split(directive(documented_install(tmp_path).read_text(), "ExecStart"))
    assert argv[1:3] == ["watch", "/srv/reconciler/manifests"], argv
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    argv[2] = str(manifests)
    argv[argv.index("--metrics-address") + 1] = "127.0.0.1:0"  # the unit's port may be taken here
    sock_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path}
        # The script is /work/main's editable install; run our own package through the same interpreter.
        cmd = [sys.executable, "-m", "reconciler", *argv[1:]] if "PYTHONPATH" in os.environ else argv
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            messages = []
            while not any("READY=1" in m for m in messages):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                try:
                    messages.append(sock.recv(4096).decode())
                except TimeoutError:
                    raise AssertionError(f"no READY=1 within {READY_TIMEOUT}s: {messages}") from None
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert '"event": "ready"' in err, err  # --log-format json as in the unit
