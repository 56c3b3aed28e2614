"""Runs sshd in the foreground inside a rig host and prints "ready" once it listens.

Why: `Rig.start_sshd` restarts a stopped sshd and must know when it listens, without polling its port.
argv: SSHD_ARGV... (with -D -e, so that sshd logs to stderr).
"""

import contextlib
import os
import subprocess
import sys


def _ready() -> None:
    """One write (the reader stops at the word and closes its end), then stdout is closed."""
    with contextlib.suppress(BrokenPipeError):
        os.write(1, b"ready\n")
    os.close(1)


def main() -> None:
    proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"Server listening on" in line:
            break
    _ready()
    for _ in proc.stderr:  # keep draining sshd's log so that it never blocks
        pass
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
