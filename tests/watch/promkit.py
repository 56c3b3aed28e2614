"""Reading a Prometheus metrics page, the example alert rules, and `promtool` (Prometheus' own checker,
from Debian's `prometheus` package; tests that need it skip when it is not installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ALERTS = Path(__file__).resolve().parents[2] / "contrib" / "prometheus" / "alerts.yaml"
TARGET = {"job": "reconciler", "instance": "127.0.0.1:9109"}  # what the scrape adds (honor_labels: true)
PROMQL_WORDS = frozenset({"and", "or", "unless", "on", "ignoring", "by", "without", "group_left",
                          "group_right", "time", "increase", "rate", "sum", "count", "max", "min"})
PROMETHEUS_OWN = frozenset({"up"})  # series Prometheus itself records for each target


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def selector(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted({**TARGET, **dict(self.labels)}.items()))
        return f"{self.name}{{{inner}}}"


def samples(page: str) -> list[Sample]:
    return [Sample(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(page) for s in family.samples]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


def selectors(expr: str) -> list[Selector]:
    """Every metric selector in a PromQL expression (the few forms the example rules use)."""
    expr = re.sub(r"\b(on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)", " ", expr)
    out = []
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
        name, braces = m.group(1), m.group(2)
        following = expr[m.end():].lstrip()[:1]
        if name in PROMQL_WORDS or following == "(" or name.isdigit():
            continue
        if re.fullmatch(r"\d+[smhdw]", name) or expr[:m.start()].rstrip().endswith("["):
            continue  # a range like [15m]
        matchers = tuple(re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', braces or ""))
        out.append(Selector(name, matchers))
    return out


def promtool() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def series_over(pages: Sequence[tuple[str, int]]) -> list[dict[str, str]]:
    """promtool input series from consecutive scrapes: each page's values held for its minutes."""
    per_page = [{s.selector(): s.value for s in samples(page)} for page, _ in pages]
    keys = sorted({k for p in per_page for k in p})
    out = []
    for key in keys:
        parts = []
        for values, (_, minutes) in zip(per_page, pages, strict=True):
            v = values.get(key)
            parts.append(f"_x{minutes}" if v is None else f"{v:g}x{minutes}")
        out.append({"series": key, "values": " ".join(parts)})
    return out
