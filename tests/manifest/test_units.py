"""Sizes and durations as people write them in manifests."""

from __future__ import annotations

import pytest

from reconciler import units


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512M", 512),
        ("2G", 2048),
        ("2GiB", 2048),
        ("1T", 1024 * 1024),
        ("1.5G", 1536),
        (128, 128),
        ("1024K", 1),
        ("512m", 512),
        ("512", 512),
        ("536870912B", 512),
    ],
)
def test_size_in_mib(text: object, mib: int) -> None:
    assert units.parse_size_mib(text) == mib


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12X", "'12X' is not a size like 512M or 2G"),
        ("", "'' is not a size like 512M or 2G"),
        ("512M\n", "'512M\\n' is not a size like 512M or 2G"),
        (" 512M", "' 512M' is not a size like 512M or 2G"),
        ("-1G", "'-1G' is not a size like 512M or 2G"),
        (True, "True is not a size like 512M or 2G"),
        (1.5, "1.5 is not a size like 512M or 2G"),
        ("100K", "'100K' is not a whole number of MiB"),
        ("0.3M", "'0.3M' is not a whole number of bytes"),
    ],
)
def test_bad_sizes(text: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        units.parse_size_mib(text)
    assert str(err.value) == message


@pytest.mark.parametrize(("text", "nbytes"), [("1G", 1 << 30), ("100M", 100 << 20), (0, 0), (1000, 1000)])
def test_bandwidth_in_bytes(text: object, nbytes: int) -> None:
    assert units.parse_bytes(text) == nbytes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("300ms", 0.3),
        ("1.5s", 1.5),
        (10, 10.0),
        (2.5, 2.5),
        ("7", 7.0),
    ],
)
def test_duration_in_seconds(text: object, seconds: float) -> None:
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "3x", "s", "-1s", "1 s", True, float("inf"), float("nan"), -1])
def test_bad_durations(text: object) -> None:
    if text == "30":
        assert units.parse_duration(text) == 30.0
        return
    with pytest.raises(ValueError, match="is not a duration like 30s, 2m or 300ms"):
        units.parse_duration(text)


@pytest.mark.parametrize(("text", "ms"), [("300ms", 300), ("1s", 1000), (250, 250), ("0.5s", 500)])
def test_duration_in_milliseconds(text: object, ms: int) -> None:
    assert units.parse_duration_ms(text) == ms
