"""Benchmark: the instructions one CLI run executes (valgrind's cachegrind), a figure the load does not move.

Wall and CPU times on a shared 2-core machine vary by 2x with the other work on it; the instruction count
of a run is the same to within a percent, so a change to the CLI's fixed cost (imports, dataclass
definitions, ...) can be measured while others work. Each command runs once to fill the bytecode cache
(a private PYTHONPYCACHEPREFIX, as bench_cli does), then once under
`valgrind --tool=cachegrind --cache-sim=no --branch-sim=no`; QEMU processes it starts are not traced.

Commands: `python -c pass` (the floor), `validate`, `plan` and `status` of the given manifests (plan and
status should find them applied: run `python -m reconciler apply --yes PATH` first, on a copy with its own
state directories). Needs valgrind (`apt-get install valgrind`).

Figures (issue 13, the repository's examples in a copy, web1 and db1 running), million instructions,
main at 4b1e130 / h/cli (after its rebase onto a32fb1c: plan 724 / 506, status 700 / 508):
  python -c pass 143 | validate 395 / 331 | plan 699 / 488 | status 686 / 488 | status, 20 running 851 / 642
  apply of one new instance 890 / 769 | apply --force of it (stop) 857 / 729
Usage: python3 bench/bench_cli_instructions.py MANIFESTS [--commands validate,plan,status]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def instructions(args: list[str], env: dict[str, str]) -> int:
    """Instructions of `python3 ARGS` (after one run that fills the bytecode cache)."""
    subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, check=False)
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--branch-sim=no",
                           "--cachegrind-out-file=/dev/null", sys.executable, *args],
                          env=env, cwd=REPO, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"no count from valgrind for {args}:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifests")
    parser.add_argument("--commands", default="validate,plan,status")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    pyc = tempfile.mkdtemp(prefix="bench-pyc-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pyc
    try:
        print(f"python -c pass {instructions(['-c', 'pass'], env) / 1e6:8.1f} M instructions")
        for command in args.commands.split(","):
            count = instructions(["-m", "reconciler", command, args.manifests], env)
            print(f"{command:14} {count / 1e6:8.1f} M instructions")
    finally:
        shutil.rmtree(pyc, ignore_errors=True)


if __name__ == "__main__":
    main()
