"""Human-friendly quantities in manifests: sizes ("512M", "2G") and durations ("30s", "2m", "300ms").

Manifests are written by people, so they say "2G", not 2048. This module is the one place that turns those
spellings into the model's units (MiB, bytes, seconds, milliseconds). It is pure and raises `ValueError`
with a message that quotes the offending value; the manifest loader turns that into a one-line problem.
"""

from __future__ import annotations

import math
import re

# Binary multiples, as QEMU's -m understands them. "K"/"KiB"/"k" are all accepted.
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(?:([KMGTkmgt])(?:i?B)?|(B))?")  # as the schema's pattern
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?")

SIZE_HINT = "a size like 512M or 2G"
DURATION_HINT = "a duration like 30s, 2m or 300ms"


def _reject(value: object, hint: str) -> ValueError:
    return ValueError(f"{value!r} is not {hint}")


def parse_bytes(value: object, *, default_unit: str = "") -> int:
    """Bytes in a size: "1G" -> 1073741824. A bare number is in `default_unit` ("" = bytes, "M" = MiB)."""
    if isinstance(value, bool):
        raise _reject(value, SIZE_HINT)
    if isinstance(value, int):
        number: float = value
        unit = default_unit
    elif isinstance(value, str) and (match := _SIZE_RE.fullmatch(value)):
        number = float(match.group(1)) if "." in match.group(1) else int(match.group(1))
        unit = "" if match.group(3) else (match.group(2) or "").upper() or default_unit
    else:
        raise _reject(value, SIZE_HINT)
    if number < 0:
        raise _reject(value, SIZE_HINT)
    result = number * _SIZE_FACTORS[unit]
    if result != int(result):
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(result)


def format_rate(per_second: int) -> str:
    """Bytes per second in the largest binary unit that divides them: 4194304 -> "4 MiB/s"."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if per_second % size == 0:
            return f"{per_second // size} {unit}/s"
    return f"{per_second} B/s"


def parse_size_mib(value: object) -> int:
    """MiB in a size: "512M" -> 512, "2G" -> 2048; a bare int is already MiB. Must be whole MiB."""
    nbytes = parse_bytes(value, default_unit="M")
    if nbytes % (1024 * 1024):
        raise ValueError(f"{value!r} is not a whole number of MiB")
    return nbytes // (1024 * 1024)


def parse_duration(value: object) -> float:
    """Seconds in a duration: "30s" -> 30.0, "2m" -> 120.0, "300ms" -> 0.3; a bare number is seconds."""
    if isinstance(value, bool):
        raise _reject(value, DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.fullmatch(value)):
        seconds = float(match.group(1)) * _DURATION_FACTORS[match.group(2) or "s"]
    else:
        raise _reject(value, DURATION_HINT)
    if seconds < 0 or not math.isfinite(seconds):
        raise _reject(value, DURATION_HINT)
    return seconds


def parse_duration_ms(value: object) -> int:
    """Whole milliseconds in a duration: "300ms" -> 300, "1s" -> 1000; a bare number is milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _reject(value, DURATION_HINT)
        return value
    return round(parse_duration(value) * 1000)
