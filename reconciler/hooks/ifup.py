#!/usr/bin/env python3
"""The bridge hook: QEMU runs it as a tap device's `script=` to plug the new interface in.

Why a fixed executable: the seed wrote a shell script to a temp file on every start, leaked on failure and
quoted by hand. Instead one file ships in the package, and the facts it needs are data.

Contract (QEMU runs `ifup.py <ifname>` with QEMU's own environment, and passes nothing else):
- The executor starts QEMU with RECONCILER_INSTANCE_DIR=<the instance's directory> in its environment
  (`argv.Launch.env`); QEMU's children inherit it, also for NICs hot-plugged later.
- Before the start it writes `<instance dir>/nic-<ifname>.json` (`argv.Launch.nic_files`), a JSON object
  with instance, interface, mac, ip, bridge, hook (ip, bridge and hook may be null).
- If `hook` is set, this script execs it as `<hook> <ifname>` with the seed's environment contract added:
  INSTANCE, MAC, IP, BRIDGE, INTERFACE (IP and BRIDGE empty when unset). Its exit status is QEMU's verdict.
- Otherwise it runs `ip link set dev <if> master <bridge>` (when a bridge is set) and `ip link set dev <if>
  up`, as argv lists, each under a deadline.
A non-zero exit makes QEMU fail the netdev, so the start fails with this script's message on stderr.

Stdlib only: it may run under the system python3. Pure parts (`NicHookConfig`, `hook_environment`,
`default_commands`) are unit-tested; `main` is the thin shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

ENV_INSTANCE_DIR = "RECONCILER_INSTANCE_DIR"
COMMAND_TIMEOUT = 10.0  # seconds per `ip` command
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"


class HookError(Exception):
    """A failure this hook reports on stderr as one line before exiting non-zero."""


@dataclass(frozen=True, slots=True)
class NicHookConfig:
    """What the hook knows about one tap NIC (the content of nic-<ifname>.json)."""

    instance: str
    interface: str
    mac: str
    ip: str | None = None
    bridge: str | None = None
    hook: str | None = None  # a user executable replacing the default `ip link` commands

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NicHookConfig:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise HookError(f"not JSON: {err}") from err
        if not isinstance(data, dict):
            raise HookError("not a JSON object")
        return cls(
            instance=_field(data, "instance", required=True) or "",
            interface=_field(data, "interface", required=True) or "",
            mac=_field(data, "mac", required=True) or "",
            ip=_field(data, "ip"),
            bridge=_field(data, "bridge"),
            hook=_field(data, "hook"),
        )


def _field(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise HookError(f"field {key!r} must be a non-empty string")
    return value


def nic_file_name(ifname: str) -> str:
    """The per-NIC file's name inside the instance directory (reconciler.layout uses the same)."""
    return f"nic-{ifname}.json"


def hook_environment(cfg: NicHookConfig, base: Mapping[str, str]) -> dict[str, str]:
    """The environment a user hook runs with: the inherited one plus the seed's contract."""
    env = dict(base)
    env.update(INSTANCE=cfg.instance, MAC=cfg.mac, IP=cfg.ip or "", BRIDGE=cfg.bridge or "",
               INTERFACE=cfg.interface)
    return env


def default_commands(cfg: NicHookConfig, ip: str = "ip") -> tuple[tuple[str, ...], ...]:
    """The argv lists that attach the interface to its bridge (if any) and bring it up."""
    cmds: list[tuple[str, ...]] = []
    if cfg.bridge:
        cmds.append((ip, "link", "set", "dev", cfg.interface, "master", cfg.bridge))
    cmds.append((ip, "link", "set", "dev", cfg.interface, "up"))
    return tuple(cmds)


def load_config(ifname: str, env: Mapping[str, str]) -> NicHookConfig:
    inst_dir = env.get(ENV_INSTANCE_DIR)
    if not inst_dir:
        raise HookError(f"{ENV_INSTANCE_DIR} is not set (QEMU must be started by the reconciler)")
    path = os.path.join(inst_dir, nic_file_name(ifname))
    try:
        with open(path, encoding="utf-8") as f:
            cfg = NicHookConfig.from_json(f.read())
    except OSError as err:
        raise HookError(f"{path}: {err.strerror}") from err
    except HookError as err:
        raise HookError(f"{path}: {err}") from err
    if cfg.interface != ifname:
        raise HookError(f"{path}: names interface {cfg.interface!r}, QEMU passed {ifname!r}")
    return cfg


def _run(cmd: Sequence[str]) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:
        raise HookError(f"{' '.join(cmd)}: no answer after {COMMAND_TIMEOUT:.0f}s") from err
    except OSError as err:
        raise HookError(f"{cmd[0]}: {err.strerror}") from err
    if res.returncode != 0:
        raise HookError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if env is None else env)
    if len(args) != 1 or not args[0]:
        print("usage: ifup.py IFNAME (run by QEMU as a tap script)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args[0], environ)
        if cfg.hook:
            try:
                os.execve(cfg.hook, [cfg.hook, cfg.interface], hook_environment(cfg, environ))
            except OSError as err:
                raise HookError(f"hook {cfg.hook}: {err.strerror}") from err
        import shutil  # here: the module is also imported by every start (argv), which needs no shutil

        ip = shutil.which("ip", path=environ.get("PATH", "") + ":" + _SBIN_PATH) or "ip"
        for cmd in default_commands(cfg, ip):
            _run(cmd)
    except HookError as err:
        print(f"reconciler ifup {args[0]}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
