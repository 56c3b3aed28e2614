"""What several unit tests share: running a snippet in a fresh interpreter against a private cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fresh_probe(code: str, cache_home: Path) -> dict[str, object]:
    """Run `code` in a fresh interpreter (this checkout first on the path, $XDG_CACHE_HOME at
    `cache_home`); the JSON object it prints."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result
