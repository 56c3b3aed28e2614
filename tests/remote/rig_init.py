"""PID 1 of one rig host: mounts the host's private state tmpfs, starts sshd, then reaps orphans.

Why a process of its own and not sshd as init: a test stops a host's sshd while its QEMUs go on (an
unreachable host is not a dead one), and daemonized QEMUs are reparented to init, which must reap them.

argv: STATE_ROOT LOGFILE SSHD_ARGV... ; prints "ready" on stdout once sshd listens.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading


def _ready() -> None:
    """One write (the reader stops at the word and closes its end), then stdout is closed."""
    with contextlib.suppress(BrokenPipeError):
        os.write(1, b"ready\n")
    os.close(1)


def _plain_shell_rc(state_root: str) -> None:
    """sshd runs every command through root's shell, and bash reads ~/.bashrc for it: this machine's
    (pyenv's init, a rehash that waits on a lock) is the controller's, shared by the hosts through the
    one file system. A host of its own would have its own; here an empty one is mounted over it, inside
    this host's private mount namespace only."""
    rc = os.path.expanduser("~/.bashrc")
    if os.path.isfile(rc):
        empty = os.path.join(state_root, ".rig-bashrc")
        open(empty, "w").close()
        subprocess.run(["mount", "--bind", empty, rc], check=True)


def main() -> None:
    state_root, logfile, *sshd = sys.argv[1:]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "rig-state", state_root], check=True)
    _plain_shell_rc(state_root)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # the kernel then kills the whole host
    signal.signal(signal.SIGCHLD, lambda *_: None)  # so that pause() wakes for a reparented orphan
    proc = subprocess.Popen(sshd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    with open(logfile, "ab", buffering=0) as log:
        for line in proc.stderr:  # until sshd says it listens (the parent holds the deadline)
            log.write(line)
            if b"Server listening on" in line:
                break
        _ready()
        stream = proc.stderr

        def copy() -> None:
            for line in stream:
                log.write(line)

        threading.Thread(target=copy, daemon=True).start()
        while True:  # init's duty: reap everything, sshd and orphaned QEMUs alike
            try:
                os.wait()
            except ChildProcessError:
                signal.pause()


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback
        with open(sys.argv[2], "a") as f:
            traceback.print_exc(file=f)
        raise
