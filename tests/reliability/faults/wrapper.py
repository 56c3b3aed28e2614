"""A qemuBinary wrapper for fault tests: a small Python executable written to tmp (tests only; the product
never generates executables). It runs the real QEMU with the exact argv it was given (argv[0] included,
via `executable=`), so the daemon it leaves is indistinguishable from a plain launch, then injects the
fault named in the file `fault-mode` next to it:

  pass        nothing (`--version` always passes)
  kill        SIGKILL the daemon once it is set up: QEMU dies before QMP answers
  stop        SIGSTOP the daemon: a monitor that accepts connections and never answers
  fill:PATH   write PATH until the disk is full: the reconciler's next write (the record) fails
  slow:SECS   wait SECS before running QEMU: a launch long enough to interrupt the reconciler during it
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

REAL_QEMU = "/usr/bin/qemu-system-x86_64"

_SCRIPT = r'''#!{python}
import os, signal, subprocess, sys, time
REAL = {real!r}
here = os.path.dirname(os.path.abspath(sys.argv[0]))
with open(os.path.join(here, "fault-mode")) as f:
    mode = f.read().strip()
if "--version" in sys.argv or mode == "pass":
    os.execv(REAL, sys.argv)
if mode.startswith("slow:"):
    time.sleep(float(mode[5:]))
    os.execv(REAL, sys.argv)
done = subprocess.run(sys.argv, executable=REAL)
if done.returncode == 0 and mode in ("kill", "stop"):
    with open(sys.argv[sys.argv.index("-pidfile") + 1]) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
elif done.returncode == 0 and mode.startswith("fill:"):
    try:
        with open(mode[5:], "ab") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    except OSError:
        pass
sys.exit(done.returncode)
'''


class Wrapper:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "qemu-system-x86_64"  # the name discovery knows QEMU by
        self.path.write_text(_SCRIPT.format(python=sys.executable, real=REAL_QEMU))
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)
        self._mode = directory / "fault-mode"
        self.set("pass")

    def set(self, mode: str) -> None:
        tmp = self._mode.with_suffix(".tmp")
        tmp.write_text(mode)
        os.replace(tmp, self._mode)
