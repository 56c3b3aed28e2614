"""Argument types shared by the commands: each rejects a bad value with a message that names the value.

argparse words a `type=` function's ValueError as "invalid <function name> value"; these raise
ArgumentTypeError instead, which the command-line parser shows as `--option: <message>`.
"""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: 0 or more (`inf` allowed: never)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value
