"""The bridge hook: its pure parts, and the script run the way QEMU runs it (a fake user hook records
what it received; the default `ip link` path needs root and a bridge, so it is covered by its argv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.argv import DEFAULT_IFUP
from reconciler.hooks.ifup import (
    ENV_INSTANCE_DIR,
    HookError,
    NicHookConfig,
    default_commands,
    hook_environment,
    load_config,
    main,
)

CFG = NicHookConfig(instance="vm1", interface="rc0123abcdn0", mac="52:54:00:12:34:56", ip="192.0.2.5",
                    bridge="br0")


def test_json_round_trip() -> None:
    assert NicHookConfig.from_json(CFG.to_json()) == CFG
    assert json.loads(CFG.to_json()) == {"instance": "vm1", "interface": "rc0123abcdn0",
                                         "mac": "52:54:00:12:34:56", "ip": "192.0.2.5", "bridge": "br0",
                                         "hook": None}


@pytest.mark.parametrize(("text", "needle"), [
    ("[", "not JSON"), ("[]", "not a JSON object"), ('{"instance": "a", "interface": "b"}', "'mac'"),
    ('{"instance": "a", "interface": "b", "mac": "m", "ip": 5}', "'ip'"),
])
def test_bad_json(text: str, needle: str) -> None:
    with pytest.raises(HookError, match=needle):
        NicHookConfig.from_json(text)


def test_environment_contract() -> None:
    env = hook_environment(CFG, {"PATH": "/bin", "MAC": "old"})
    assert env == {"PATH": "/bin", "INSTANCE": "vm1", "MAC": "52:54:00:12:34:56", "IP": "192.0.2.5",
                   "BRIDGE": "br0", "INTERFACE": "rc0123abcdn0"}
    bare = NicHookConfig(instance="vm1", interface="t0", mac="52:54:00:00:00:01")
    assert hook_environment(bare, {})["IP"] == "" and hook_environment(bare, {})["BRIDGE"] == ""


def test_default_commands() -> None:
    assert default_commands(CFG, "/sbin/ip") == (
        ("/sbin/ip", "link", "set", "dev", "rc0123abcdn0", "master", "br0"),
        ("/sbin/ip", "link", "set", "dev", "rc0123abcdn0", "up"),
    )
    no_bridge = NicHookConfig(instance="vm1", interface="t0", mac="52:54:00:00:00:01")
    assert default_commands(no_bridge) == (("ip", "link", "set", "dev", "t0", "up"),)


def test_load_config(tmp_path: Path) -> None:
    (tmp_path / "nic-rc0123abcdn0.json").write_text(CFG.to_json())
    assert load_config("rc0123abcdn0", {ENV_INSTANCE_DIR: str(tmp_path)}) == CFG
    with pytest.raises(HookError, match="is not set"):
        load_config("rc0123abcdn0", {})
    with pytest.raises(HookError, match="No such file"):
        load_config("other", {ENV_INSTANCE_DIR: str(tmp_path)})
    (tmp_path / "nic-x.json").write_text(CFG.to_json())
    with pytest.raises(HookError, match="QEMU passed 'x'"):
        load_config("x", {ENV_INSTANCE_DIR: str(tmp_path)})


def test_main_reports_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rc0"], {ENV_INSTANCE_DIR: str(tmp_path)}) == 1
    err = capsys.readouterr().err
    assert err.startswith("reconciler ifup rc0: ") and err.count("\n") == 1
    assert main([], {}) == 2


def test_script_execs_user_hook_with_contract(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    hook = tmp_path / "vif"
    hook.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'env': {{k: os.environ[k] for k in "
                    f"('INSTANCE', 'MAC', 'IP', 'BRIDGE', 'INTERFACE')}}}}, open({str(out)!r}, 'w'))\n")
    hook.chmod(0o755)
    cfg = NicHookConfig(instance="vm1", interface="rc1n0", mac="52:54:00:00:00:07", bridge="br9",
                        hook=str(hook))
    (tmp_path / "nic-rc1n0.json").write_text(cfg.to_json())
    env = {**os.environ, ENV_INSTANCE_DIR: str(tmp_path)}
    # exactly as QEMU does it: execv(script, [script, ifname]) with QEMU's environment
    res = subprocess.run([DEFAULT_IFUP, "rc1n0"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text()) == {"argv": ["rc1n0"], "env": {
        "INSTANCE": "vm1", "MAC": "52:54:00:00:00:07", "IP": "", "BRIDGE": "br9", "INTERFACE": "rc1n0"}}


def test_script_fails_without_config(tmp_path: Path) -> None:
    env = {**os.environ, ENV_INSTANCE_DIR: str(tmp_path)}
    res = subprocess.run([DEFAULT_IFUP, "rc1n0"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "nic-rc1n0.json" in res.stderr
