"""Reading a secret (a VNC password) from a file on the node, strictly.

Secrets never go on a command line (any local user can read /proc/PID/cmdline) nor into records, intents
or logs: the executor reads the file right before a launch and hands the value to QEMU over QMP. The file
must be a regular file that only its owner can access (0600 or stricter), and hold one non-empty line; a
single trailing newline (as editors write) is not part of the secret.
"""

from __future__ import annotations

import os
import stat

from reconciler.errors import SecretFileError

MAX_BYTES = 4096


def read_secret(path: str, field: str) -> str:
    """The secret in `path`; SecretFileError (naming `field`, never the content) when it is unfit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        raise SecretFileError(field, path, err.strerror or str(err)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(field, path, "is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SecretFileError(field, path, f"mode {mode:04o} lets others read it; use chmod 600")
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as err:
        raise SecretFileError(field, path, err.strerror or str(err)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise SecretFileError(field, path, f"is longer than {MAX_BYTES} bytes")
    text = data.removesuffix(b"\n").decode("utf-8", errors="replace")
    if not text:
        raise SecretFileError(field, path, "is empty")
    if any(not c.isprintable() for c in text):
        raise SecretFileError(field, path, "must hold one line of printable text")
    return text
