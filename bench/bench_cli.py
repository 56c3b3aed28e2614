"""Benchmark: what one CLI run costs, side by side with bare QEMU (and libvirt, when installed), medians.

Issue 13's goals, each measured in one run with its baseline:
- start: `apply --yes` of one new instance (a fresh CLI process, until it returns) vs a bare `-daemonize`
  launch until QMP answers (launch.launch, in this process); goal: at most bare + 80 ms, and at most
  0.5x `virsh start` of the same guest when libvirt is installed.
- hard stop: `apply --yes --force` of a running instance now declared Halted (QMP `quit`) vs bare: connect
  to QMP, `quit`, wait for the exit on a pidfd; goal: at most bare + 80 ms. `virsh destroy` beside it.
- plan: `plan` with nothing to change on the repository's examples (manifests/, copied into a fresh git
  repository as in a checkout, both running); goal: at most 80 ms end to end.
- status: `status` with 20 running instances; goal: at most 80 ms.
- the floor under all of them: `python -c pass` (and the share of it that site-packages' .pth files cost,
  from `-X importtime`: here a certifi import we do not control).

The CLI runs as an installed package runs: through its console script (`cli_argv`), with a bytecode cache
(a private PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE dropped for the child); without the cache every
run compiles our modules again.

libvirt (optional, never in CI): when `virsh` reaches qemu:///system, a domain `reconciler-bench` booting
the same kernel and initrd (TCG, 128 MiB, one vCPU, user-mode virtio NIC, serial on a unix socket) is
defined, timed (`virsh start`, `virsh destroy`) and undefined again. On a host where /dev/kvm is root's
only, libvirt re-probes QEMU's capabilities before every start (about 5 s) unless qemu.conf runs QEMU as
root; the figure is then not libvirt's. `virsh migrate --live` needs a second libvirtd (libvirt refuses a
migration to its own host): bench_apply.py's migration part measures it (bench/libvirt_peer.py).

Every QEMU started here is killed at the end (pinned by a pidfd and verified by its argv).
Usage: python3 bench/bench_cli.py [--runs N] [--fleet 20] [--only start,stop,plan,status]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import libvirt_peer
from executor.kit import World, kill_verified, make_world

from reconciler import argv, launch, model, procs, qmp
from reconciler.pidfd import ProcessHandle

REPO = Path(__file__).resolve().parent.parent
GUEST = Path("/var/tmp/reconciler-guest")
BUDGET_MS = 80
_PYC = tempfile.mkdtemp(prefix="bench-pyc-")


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI child: a bytecode cache of its own (see the module docstring), and this
    checkout first on the path (the console script then runs this checkout's code, whatever is installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = _PYC
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, **(extra or {})}


def cli_argv(*python_flags: str) -> list[str]:
    """How a CLI child starts: as an installed package runs, through the `reconciler` console script that
    pip put beside this interpreter (`python -m reconciler` also imports runpy: about 4 ms more), or with
    `-m reconciler` where there is none (this checkout not installed into that environment)."""
    script = Path(sys.executable).with_name("reconciler")
    if script.is_file():
        return [sys.executable, *python_flags, str(script)]
    return [sys.executable, *python_flags, "-m", "reconciler"]


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each CLI run, by its command


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(args: Sequence[str], check: bool = True) -> tuple[float, str]:
    """Run the CLI; (wall seconds, stdout). Its CPU time (less sensitive to the load than the wall time,
    QEMU's foreground process included) is kept in CPU under the command's name."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run([*cli_argv(), *args], capture_output=True, text=True,
                          env=cli_env(), timeout=300, check=False)
    elapsed = time.perf_counter() - t0
    name = " ".join([args[0], *(a for a in args[1:] if a in ("--force", "--target"))])
    CPU.setdefault(name, []).append(_children_cpu() - cpu0)
    if check and done.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# --- the floor -------------------------------------------------------------------------------------------


def floor(runs: int) -> tuple[float, float]:
    """(median wall of `python -c pass`, median ms of imports done by .pth files at start)."""
    walls, pth = [], []
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=cli_env())  # fills the bytecode cache
    for _ in range(runs):
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=cli_env())
        walls.append(time.perf_counter() - t0)
        CPU.setdefault("python -c pass", []).append(_children_cpu() - cpu0)
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True,
                             text=True, env=cli_env(), check=True).stderr
        pth.append(sum(int(m.group(1)) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| {3}(\S+)", err)
                       if m.group(2) not in _SITE_OWN) / 1e6)
    return statistics.median(walls), statistics.median(pth)


# What site imports of its own (at depth one under `site`); anything else there comes from a .pth file.
_SITE_OWN = {"os", "_sitebuiltins", "_distutils_hack", "sitecustomize", "usercustomize", "encodings",
             "codecs", "io", "abc", "stat", "posixpath", "genericpath", "_collections_abc", "types",
             "importlib", "importlib.util", "importlib.machinery", "warnings"}


# --- libvirt ---------------------------------------------------------------------------------------------

DOMAIN = "reconciler-bench"


def libvirt_available() -> bool:
    return shutil.which("virsh") is not None and libvirt_peer.reachable()


def _virsh(*args: str, check: bool = True) -> float:
    return libvirt_peer.virsh(libvirt_peer.LOCAL, *args, check=check)


class Libvirt:
    """The bench domain, defined for the run and undefined at the end."""

    def __init__(self, tmp: Path) -> None:
        xml = tmp / "domain.xml"
        xml.write_text(libvirt_peer.domain_xml(str(GUEST / "vmlinuz"), str(GUEST / "initrd.img"),
                                               tmp / "serial.sock", name=DOMAIN, serial_mode="bind",
                                               mac="52:54:00:00:0c:01"))
        _virsh("destroy", DOMAIN, check=False)
        _virsh("undefine", DOMAIN, check=False)
        _virsh("define", str(xml))
        _virsh("start", DOMAIN)  # the first start may probe QEMU's capabilities: not timed
        _virsh("destroy", DOMAIN)

    def start(self) -> float:
        return _virsh("start", DOMAIN)

    def destroy(self) -> float:
        return _virsh("destroy", DOMAIN)

    def close(self) -> None:
        _virsh("destroy", DOMAIN, check=False)
        _virsh("undefine", DOMAIN, check=False)


# --- start and hard stop ---------------------------------------------------------------------------------


def _bare_spec(name: str) -> model.InstanceSpec:
    return model.InstanceSpec(name=name, memory_mib=128, kernel=model.KernelBoot(
        str(GUEST / "vmlinuz"), "/dev/ram0", str(GUEST / "initrd.img")),
        serial_console=True, nics=(model.Nic(mode=model.NicMode.USER, mac="52:54:00:00:0d:01"),))


def _bare_launch(world: World, name: str) -> tuple[float, launch.Launched, argv.Launch]:
    built = argv.build_launch(_bare_spec(name), world.node("node-a"))
    t0 = time.perf_counter()
    launched = asyncio.run(launch.launch(name, built.argv, built.paths, 30.0))
    return time.perf_counter() - t0, launched, built


async def _bare_quit(socket_path: str, launched: launch.Launched) -> float:
    handle = ProcessHandle.open_verified(
        launched.pid, lambda p: procs.check(p, launched.create_time, launched.argv).ours)
    assert handle is not None
    with handle:
        t0 = time.perf_counter()
        async with qmp.session(socket_path) as s:
            await s.execute("quit")
            if not await handle.wait_exit(30):
                raise SystemExit("bare quit: QEMU did not exit")
        return time.perf_counter() - t0


def bench_start_stop(world: World, runs: int, virt: Libvirt | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("start", "bare start", "virsh start", "stop", "bare quit",
                                                   "virsh destroy")}
    for i in range(-1, runs):  # run -1 warms the bytecode cache of every module a start and a stop use
        name = f"s{i + 1}"
        world.instance(name, "node-a")
        out["start"].append(cli(["apply", "--yes", "--target", name, str(world.manifests)])[0])
        world.instance(name, "node-a", runStrategy="Halted")
        elapsed, text = cli(["apply", "--yes", "--force", "--target", name, str(world.manifests)])
        if "stopped" not in text:
            raise SystemExit(f"the hard stop did not stop {name}:\n{text}")
        out["stop"].append(elapsed)
        bare_name = f"bare{i + 1}"
        started, launched, built = _bare_launch(world, bare_name)
        out["bare start"].append(started)
        out["bare quit"].append(asyncio.run(_bare_quit(built.paths.qmp, launched)))
        if virt is not None:
            out["virsh start"].append(virt.start())
            out["virsh destroy"].append(virt.destroy())
        world.reap()
        world.remove(name)
        for n in (name, bare_name):
            shutil.rmtree(world.paths("node-a", n).dir, ignore_errors=True)
        if i < 0:
            out = {k: [] for k in out}
    return out


# --- plan on the examples, status of 20 ------------------------------------------------------------------


def _wait_ready(serial_log: Path) -> None:
    """Until the guest has booted (a booting TCG guest takes a core: no fair timing meanwhile).

    A guest that does not get there is said and waited for no longer: its QEMU runs all the same, which
    is all `status` looks at. (One of 20 guests booting at once on two cores once stopped after the
    kernel's "8254 timer not connected to IO-APIC" line, under TCG.)"""
    from conftest import LineTimeout, SerialLog

    try:
        SerialLog(serial_log).wait_for("reconciler-guest: ready", 120)
    except LineTimeout:
        print(f"  (the guest of {serial_log.parent.name} printed no ready line within 120 s)", flush=True)


def _wait_idle(root: Path, deadline: float = 180.0) -> float:
    """Until the QEMUs under `root` have settled: the guests print ready before their boot's tail is
    done, and 20 booting TCG guests hold both cores for tens of seconds, which a status run would
    otherwise be timed against. Settled: together under a fifth of a core, or no longer dropping (idle
    TCG guests still tick: 20 take about 0.3 cores here) while using under half the machine. (A plateau
    alone is not enough: guests that want more than every core use all of them, second after second,
    and a run of 2026-12-07 timed `status` against 2.00 cores that way.) Returns the cores they use
    then."""
    import psutil

    guests = [psutil.Process(p.pid) for p in procs.qemu_processes() if any(str(root) in a for a in p.cmdline)]
    end = time.monotonic() + deadline
    last = None
    unsaturated = 0.5 * (os.cpu_count() or 1)
    while time.monotonic() < end:
        before = sum(sum(g.cpu_times()[:2]) for g in guests)
        time.sleep(1.0)  # a bench measuring quiescence, not the product waiting on an event
        rate = sum(sum(g.cpu_times()[:2]) for g in guests) - before
        if rate < 0.2 or (last is not None and rate > 0.9 * last and rate < unsaturated):
            return rate
        last = rate
    raise SystemExit(f"the guests under {root} did not settle within {deadline:g}s")


def _kill_under(root: Path) -> None:
    for p in procs.qemu_processes():
        if any(str(root) in a for a in p.cmdline):
            kill_verified(p.pid, str(root))


def bench_plan_examples(runs: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="bench-cli-", dir="/tmp"))
    try:
        shutil.copytree(REPO / "manifests", root / "manifests")
        git = ["git", "-C", str(root), "-c", "user.email=b@example.org", "-c", "user.name=b"]
        for step in (["init", "-q"], ["add", "manifests"], ["commit", "-q", "-m", "examples"]):
            subprocess.run([*git, *step], check=True)  # as in a checkout: the plan names the commit
        cli(["apply", "--yes", str(root / "manifests")])
        for node, name in (("node-a", "web1"), ("node-b", "db1")):
            _wait_ready(root / "state" / node / "instances" / name / "serial.log")
        _wait_idle(root)
        cli(["plan", str(root / "manifests")])  # warm: bytecode and schema caches
        walls = []
        for _ in range(runs):
            elapsed, text = cli(["plan", str(root / "manifests")])
            if "No changes" not in text:
                raise SystemExit(f"the examples' plan is not empty:\n{text}")
            walls.append(elapsed)
        return walls
    finally:
        _kill_under(root)
        shutil.rmtree(root, ignore_errors=True)


def bench_status(world: World, count: int, runs: int) -> list[float]:
    for i in range(count):
        world.instance(f"f{i:02}", "node-a")
    cli(["apply", "--yes", "--parallel", "4", str(world.manifests)])
    for i in range(count):
        _wait_ready(world.serial_log("node-a", f"f{i:02}"))
    idle = _wait_idle(world.root)
    print(f"  ({count} guests settled: {idle:.2f} cores between them)", flush=True)
    walls = []
    for _ in range(runs):
        elapsed, text = cli(["status", str(world.manifests)])
        if text.count(" running ") < count:
            raise SystemExit(f"not {count} running:\n{text}")
        walls.append(elapsed)
    return walls


# --- report ----------------------------------------------------------------------------------------------


def _section(fn: Callable[[World], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        fn(world)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--fleet", type=int, default=20)
    parser.add_argument("--only", default="start,stop,plan,status")
    parser.add_argument("--no-libvirt", action="store_true", help="skip the libvirt baseline")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    load = os.getloadavg()
    print(f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs); "
          f"medians of {args.runs} runs")
    wall, pth = floor(args.runs)
    print(f"floor: python -c pass {ms(wall)}, of which .pth imports (certifi) {pth * 1000:.0f} ms")
    cli(["validate", str(REPO / "manifests")])  # warm the bytecode and schema caches

    if wanted & {"start", "stop"}:
        tmp = Path(tempfile.mkdtemp(prefix="bench-virt-", dir="/tmp"))
        virt = Libvirt(tmp) if not args.no_libvirt and libvirt_available() else None
        if virt is None:
            print("libvirt: not installed or not reachable (qemu:///system): its column is left out")
        try:
            def start_stop(world: World) -> None:
                r = {k: statistics.median(v) if v else None for k, v in
                     bench_start_stop(world, args.runs, virt).items()}
                assert r["start"] is not None and r["bare start"] is not None
                assert r["stop"] is not None and r["bare quit"] is not None
                line = (f"start: apply {ms(r['start'])} | bare launch+QMP {ms(r['bare start'])} "
                        f"(+{(r['start'] - r['bare start']) * 1000:.0f} ms, goal <= +{BUDGET_MS})")
                if r["virsh start"]:
                    line += (f" | virsh start {ms(r['virsh start'])} "
                             f"(ratio {r['start'] / r['virsh start']:.2f}, goal <= 0.5)")
                print(line, flush=True)
                line = (f"hard stop: apply --force {ms(r['stop'])} | bare quit {ms(r['bare quit'])} "
                        f"(+{(r['stop'] - r['bare quit']) * 1000:.0f} ms, goal <= +{BUDGET_MS})")
                if r["virsh destroy"]:
                    line += (f" | virsh destroy {ms(r['virsh destroy'])} "
                             f"(ratio {r['stop'] / r['virsh destroy']:.2f})")
                print(line, flush=True)

            _section(start_stop)
        finally:
            if virt is not None:
                virt.close()
            shutil.rmtree(tmp, ignore_errors=True)
    if "plan" in wanted:
        walls = bench_plan_examples(args.runs)
        print(f"plan, nothing to change (examples, 2 running): {ms(statistics.median(walls))} "
              f"(goal <= {BUDGET_MS} ms; floor {ms(wall)})", flush=True)
    if "status" in wanted:
        def status(world: World) -> None:
            walls = bench_status(world, args.fleet, args.runs)
            print(f"status, {args.fleet} running: {ms(statistics.median(walls))} "
                  f"(goal <= {BUDGET_MS} ms; floor {ms(wall)})", flush=True)

        _section(status)
    print("CPU time (user+system, median; runs that warm caches included):")
    for name, values in CPU.items():
        if len(values) >= args.runs:
            print(f"  {name:40} {ms(statistics.median(values))}")
    load = os.getloadavg()
    print(f"load average at end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    shutil.rmtree(_PYC, ignore_errors=True)


if __name__ == "__main__":
    main()
