"""Hypothesis budgets for the reliability suite: a bounded "ci" profile and a "long" one.

Why a module and not a global `settings.load_profile`: the suite shares a pytest session with other
property tests, whose budgets are theirs to choose. Each property here names its CI budget
(`@fuzz(200)`); the active profile scales it. `RECONCILER_LONG=1` selects "long" (random, 50x the
examples, no deadline); otherwise "ci" (derandomized, so a CI run is reproducible and never flaky).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

F = TypeVar("F", bound=Callable[..., Any])

LONG = os.environ.get("RECONCILER_LONG", "") not in ("", "0")
LONG_FACTOR = 50

_COMMON: dict[str, Any] = {
    "deadline": None,  # the machine is shared: wall-clock deadlines would flake
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "print_blob": True,  # a failure prints the @reproduce_failure blob to add to the corpus
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("long", derandomize=False, **_COMMON)
PROFILE = "long" if LONG else "ci"


def fuzz(ci_examples: int) -> Callable[[F], F]:
    """Settings for one property: `ci_examples` in CI, LONG_FACTOR times more in the long form."""
    n = ci_examples * LONG_FACTOR if LONG else ci_examples
    return settings(settings.get_profile(PROFILE), max_examples=n)
