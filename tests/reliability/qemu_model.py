"""A pure model of how QEMU 7.2 splits option strings, to check the argv builder against.

Two parsers exist in QEMU and the argv uses both:

- QemuOpts (util/qemu-option.c), for -device, -chardev, -netdev (tap/user), -name, -mon, -vnc, -nic:
  a parameter is `name=value`; the name runs to the first '=' or ','; the value runs to the first ','
  that is not doubled (`,,` is a literal comma). A first parameter without '=' is the value of the
  list's implied name (-device's `driver`), with the same ',,' rule. Any later parameter without '='
  is a flag: `foo` means foo=on, `nofoo` means foo=off.
- keyval (util/keyval.c), for -blockdev and -machine: `key=val` with the grammar
  `val = { /[^,]*/ | ',,' }`; keys are dotted QAPI names (letters, digits, '-', '_', '.'), anything
  else is an error. An implied first key (-blockdev's `driver`, -machine's `type`) takes the text up to
  the first ',' or '=', with NO ',,' escaping.

Both return the (key, value) pairs in order; a value that cannot be parsed raises ModelError. The
model is validated against real QEMU in test_argv_real_qemu.py (query-block shows the exact filename).
"""

from __future__ import annotations

import itertools
import re

Pairs = list[tuple[str, str]]

_QAPI_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

# option -> (parser, implied first key)
OPTIONS: dict[str, tuple[str, str]] = {
    "-device": ("opts", "driver"),
    "-chardev": ("opts", "backend"),
    "-netdev": ("opts", "type"),
    "-nic": ("opts", "type"),
    "-name": ("opts", "guest"),
    "-mon": ("opts", "chardev"),
    "-vnc": ("opts", "vnc"),
    "-blockdev": ("keyval", "driver"),
    "-machine": ("keyval", "type"),
}


class ModelError(ValueError):
    pass


def _opts_value(text: str, i: int) -> tuple[str, int]:
    """A QemuOpts value starting at text[i]: up to the first single ','; returns (value, index after)."""
    out = []
    while i < len(text):
        c = text[i]
        if c == ",":
            if text[i + 1 : i + 2] == ",":
                out.append(",")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


def parse_qemuopts(text: str, implied: str | None) -> Pairs:
    pairs: Pairs = []
    i = 0
    first = True
    while i < len(text):
        stop = min((j for j in (text.find("=", i), text.find(",", i)) if j >= 0), default=len(text))
        if stop == len(text) or text[stop] != "=":
            if first and implied is not None:
                value, i = _opts_value(text, i)
                pairs.append((implied, value))
            else:  # a flag
                name = text[i:stop]
                pairs.append((name[2:], "off") if name.startswith("no") else (name, "on"))
                i = stop + 1
        else:
            name = text[i:stop]
            value, i = _opts_value(text, stop + 1)
            pairs.append((name, value))
        first = False
    return pairs


def parse_keyval(text: str, implied: str | None) -> Pairs:
    pairs: Pairs = []
    i = 0
    first = True
    while i < len(text):
        stop = min((j for j in (text.find("=", i), text.find(",", i)) if j >= 0), default=len(text))
        if stop > i and (stop == len(text) or text[stop] != "="):
            if not (first and implied is not None):
                raise ModelError(f"Expected '=' after parameter {text[i:stop]!r}")
            pairs.append((implied, text[i:stop]))  # no ',,' escaping for an implied key
            i = stop + 1
            first = False
            continue
        key = text[i:stop]
        if not _QAPI_KEY.fullmatch(key):
            raise ModelError(f"Invalid parameter {key!r}")
        i = stop + 1
        out = []
        while i < len(text):
            if text[i] == ",":
                i += 1
                if text[i : i + 1] != ",":
                    break
            out.append(text[i])
            i += 1
        pairs.append((key, "".join(out)))
        first = False
    return pairs


def parse_option(option: str, value: str) -> Pairs:
    """How QEMU splits the value of `option` (one of OPTIONS)."""
    kind, implied = OPTIONS[option]
    return parse_qemuopts(value, implied) if kind == "opts" else parse_keyval(value, implied)


def parsed_options(argv: tuple[str, ...] | list[str]) -> list[tuple[str, Pairs]]:
    """Every (option, pairs) in an argv, for the options the model knows."""
    out = []
    for opt, value in itertools.pairwise(argv):
        if opt in OPTIONS:
            out.append((opt, parse_option(opt, value)))
    return out
