"""Benchmark: `reconciler plan` end to end (a fresh CLI process) over 10,000 manifest instances.

Reuses the validate benchmark's generator (20 nodes, realistic 20-line instances, 50 per file). The
nodes' state directories are empty, so every instance plans as a start: the largest plan to render.
Goal: median at most 2 s on the 2-core development machine. Prints the median of 5 runs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_validate import PER_FILE, generate

RUNS = 5


def time_plan(path: Path, *extra: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "reconciler", "plan", *extra, str(path)],
                              capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 2):
            sys.exit(f"plan failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1_000, 10_000):
            root = Path(tmp) / f"m{count}" / "manifests"
            generate(root, count, PER_FILE)
            nodes = root / "nodes.yaml"  # room for every instance: a plan without capacity errors
            nodes.write_text(nodes.read_text().replace("memory: 64G", "memory: 1024G"))
            text = time_plan(root)
            js = time_plan(root, "--json")
            print(f"{count:>6} instances: plan (text) median {text:.3f} s, plan --json median {js:.3f} s "
                  f"of {RUNS}", flush=True)


if __name__ == "__main__":
    main()
