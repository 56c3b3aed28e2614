"""Unit: asyncssh is imported without a warning (reconciler.remote.sshlib), and only that one is hidden.

In a fresh interpreter with every warning an error, as a user's run shows them: cryptography 51 warns that
DSA is deprecated when asyncssh names its DSA classes at import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)


def test_the_remote_modules_import_without_a_warning() -> None:
    done = _run("import reconciler.remote.ssh, reconciler.remote.keeper, warnings\n"
                "print(reconciler.remote.ssh.asyncssh.__name__, warnings.filters[0][0])")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["asyncssh", "error"]  # the filters are as they were


def test_other_warnings_still_show() -> None:
    done = _run("import reconciler.remote.sshlib, warnings\nwarnings.warn('DSA is deprecated', UserWarning)")
    assert done.returncode != 0 and "UserWarning: DSA is deprecated" in done.stderr
