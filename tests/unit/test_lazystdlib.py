"""Unit: the inspect stand-in (reconciler.lazystdlib) loads the real module on first use, and only then.

Each case runs in a fresh interpreter (pytest has imported inspect long before us, and a process that has
it keeps its own). The AST check keeps the deferral worth having: dataclasses asks inspect for the
docstring of a class that has none, so every dataclass of ours has one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_does_not_load_inspect() -> None:
    out = _run("import sys, reconciler.model, reconciler.planner\n"
               "print(type(sys.modules['inspect']).__name__, 'ast' in sys.modules, 'dis' in sys.modules)")
    assert out == "_StandIn False False"


@pytest.mark.parametrize("use", [
    "import inspect; print(inspect.signature(lambda a, b=1: 0))",
    "from inspect import iscoroutinefunction; print(iscoroutinefunction(len) is False and '(a, b=1)')",
    "import dataclasses; print(dataclasses.inspect.signature(lambda a, b=1: 0))",
])
def test_first_use_loads_the_real_module(use: str) -> None:
    out = _run("import sys, reconciler\n" + use + "\n"
               "real = sys.modules['inspect']\n"
               "import dataclasses\n"
               "same = dataclasses.inspect.getsource is real.getsource\n"
               "print(type(real).__name__, same, 'ast' in sys.modules)")
    assert out.splitlines() == ["(a, b=1)", "module True True"]


def test_a_dataclass_without_docstring_still_gets_dataclasses_own() -> None:
    out = _run("import reconciler\nfrom dataclasses import dataclass\n"
               "@dataclass(frozen=True)\nclass P:\n    x: int\n    y: str = 'a'\n"
               "print(P.__doc__)")
    assert out == "P(x: int, y: str = 'a')"


def test_a_process_that_has_inspect_keeps_it() -> None:
    out = _run("import inspect, sys\nreal = inspect\nimport reconciler\n"
               "print(sys.modules['inspect'] is real)")
    assert out == "True"


def test_every_dataclass_of_ours_has_a_docstring() -> None:
    missing = []
    for path in sorted((REPO / "reconciler").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ClassDef) and ast.get_docstring(node) is None
                    and any("dataclass" in ast.unparse(d) for d in node.decorator_list)):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert missing == []
