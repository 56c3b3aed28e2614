"""The long form runs 50 times the CI examples: one property can take far longer than the suite's
per-test timeout (300 s), so under RECONCILER_LONG the reliability tests get an hour each."""

from __future__ import annotations

import pytest

from reliability.profiles import LONG

LONG_TIMEOUT = 3600  # seconds per test in the long form


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not LONG:
        return
    for item in items:
        if "tests/reliability/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT))
